package kafkatest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// ensureCDS returns the JVM flag that maps a class-data-sharing archive of the broker's
// classes, creating the archive on first use. Loading and verifying Kafka's and Scala's
// classes is most of a broker's start-up; with the archive a node starts in about 60% of
// the time, which adds up over the clusters a `go test ./...` starts on a 2-core machine.
//
// The archive is recorded by running a throwaway broker once with
// -XX:ArchiveClassesAtExit (the JVM writes it when the broker exits on SIGTERM). It is
// keyed by the exact JVM and by the name, size and modification time of every jar, which
// is what HotSpot checks before it maps an archive: a refetched jar would otherwise make
// every broker warn and start without it. Any failure only costs speed: the harness logs
// it and runs without the archive.
func ensureCDS(ctx context.Context, java, javaVersion, libs string, log *slog.Logger) []string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", java, javaVersion)
	entries, err := os.ReadDir(libs)
	if err != nil {
		log.Warn("kafkatest: no class-data archive", "err", err)
		return nil
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			log.Warn("kafkatest: no class-data archive", "err", err)
			return nil
		}
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	base := filepath.Dir(libs)
	archive := filepath.Join(base, "cds", hex.EncodeToString(h.Sum(nil)[:8])+".jsa")
	use := []string{"-XX:SharedArchiveFile=" + archive}
	if _, err := os.Stat(archive); err == nil {
		return use
	}
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		log.Warn("kafkatest: no class-data archive", "err", err)
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(base, "cds.lock"))
	if err != nil {
		log.Warn("kafkatest: no class-data archive", "err", err)
		return nil
	}
	defer unlock()
	if _, err := os.Stat(archive); err == nil {
		return use // made by another process while this one waited
	}

	began := time.Now()
	log.Info("kafkatest: recording the broker's class-data archive (once per machine)", "archive", archive)
	if err := recordCDS(ctx, java, libs, archive, log); err != nil {
		log.Warn("kafkatest: no class-data archive; brokers will start slower", "err", err)
		return nil
	}
	log.Info("kafkatest: class-data archive recorded", "took", time.Since(began).Round(time.Millisecond))
	// Archives of earlier jar sets or JVMs are dead weight (about 50 MB each). A broker
	// still mapping one keeps its copy until it exits.
	if old, err := filepath.Glob(filepath.Join(filepath.Dir(archive), "*.jsa")); err == nil {
		for _, p := range old {
			if p != archive {
				_ = os.Remove(p)
			}
		}
	}
	return use
}

// recordCDS starts and stops a single-node broker with -XX:ArchiveClassesAtExit, writing
// to a scratch file that is renamed to archive only once the JVM has exited, so that
// readers never map a half-written archive.
func recordCDS(ctx context.Context, java, libs, archive string, log *slog.Logger) error {
	dir, err := os.MkdirTemp(filepath.Dir(archive), "record-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "kafka.jsa")

	c := &Cluster{
		opts: Options{
			Nodes:        1,
			StartTimeout: DefaultStartTimeout,
			StopTimeout:  60 * time.Second, // the dump runs during exit
		},
		dir:           dir,
		java:          java,
		libs:          libs,
		log:           log,
		recordArchive: tmp,
	}
	if err := c.start(ctx); err != nil {
		c.killAll()
		return fmt.Errorf("training broker: %w", err)
	}
	if err := c.Stop(); err != nil {
		return fmt.Errorf("stop training broker: %w", err)
	}
	st, err := os.Stat(tmp)
	if err != nil || st.Size() == 0 {
		return fmt.Errorf("the JVM wrote no archive (see %s)", tailFile(filepath.Join(dir, "node-0", "console.log"), 5))
	}
	return os.Rename(tmp, archive)
}
