package kafkatest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// stampFile marks a libs directory that Maven filled completely. It holds the hash of the
// pom that produced it, so that a change to the pom (a new runtime jar, say) refetches
// instead of running the broker on a stale or half-copied classpath.
const stampFile = ".palaver-complete"

// RepoRoot returns the directory holding go.work, searching upwards from the working
// directory. The harness keeps its jars and the local cluster under <root>/.cache so that
// every package's test binary, whatever its working directory, shares one copy.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoRepoRoot
		}
		dir = parent
	}
}

// ensureJars makes sure <root>/.cache/kafka/<Version>/libs holds the broker's runtime
// classpath, running Maven when it does not. `go test ./...` runs one test binary per
// package in parallel, so the check and the fetch happen under an exclusive flock on a
// lock file: the first process fetches, the others wait and then find the jars there.
func ensureJars(ctx context.Context, root string, log *slog.Logger) (string, error) {
	pomPath := filepath.Join(root, "hack", "kafka", "pom.xml")
	pom, err := os.ReadFile(pomPath)
	if err != nil {
		return "", fmt.Errorf("read broker pom: %w", err)
	}
	sum := sha256.Sum256(pom)
	stamp := hex.EncodeToString(sum[:])

	base := filepath.Join(root, ".cache", "kafka", Version)
	libs := filepath.Join(base, "libs")
	if libsComplete(libs, stamp) {
		return libs, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("create jar cache: %w", err)
	}

	unlock, err := lockFile(ctx, filepath.Join(base, "fetch.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	// Another process may have fetched while this one waited for the lock.
	if libsComplete(libs, stamp) {
		return libs, nil
	}

	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMavenNotFound, err)
	}
	log.Info("fetching the Apache Kafka broker with Maven", "version", Version, "dir", libs)

	// Maven copies into a scratch directory that is renamed into place only when complete,
	// so an interrupted fetch never looks like a usable classpath.
	tmp, err := os.MkdirTemp(base, "libs.tmp-")
	if err != nil {
		return "", fmt.Errorf("create jar scratch dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("create jar scratch dir: %w", err)
	}

	cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", pomPath,
		"dependency:copy-dependencies",
		"-DoutputDirectory="+tmp, "-DincludeScope=runtime")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("fetch Kafka %s jars (mvn -f %s dependency:copy-dependencies): %w\n%s",
			Version, pomPath, err, tail(string(out), 40))
	}
	if !hasBrokerJar(tmp) {
		return "", fmt.Errorf("fetch Kafka %s jars: %w: no kafka_2.13 jar in Maven's output", Version, ErrBrokerJarMissing)
	}
	if err := os.WriteFile(filepath.Join(tmp, stampFile), []byte(stamp+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("stamp jar cache: %w", err)
	}
	if err := os.RemoveAll(libs); err != nil {
		return "", fmt.Errorf("remove stale jars: %w", err)
	}
	if err := os.Rename(tmp, libs); err != nil {
		return "", fmt.Errorf("move jars into place: %w", err)
	}
	return libs, nil
}

func libsComplete(libs, stamp string) bool {
	b, err := os.ReadFile(filepath.Join(libs, stampFile))
	if err != nil || strings.TrimSpace(string(b)) != stamp {
		return false
	}
	return hasBrokerJar(libs)
}

func hasBrokerJar(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "kafka_2.13-"+Version+".jar"))
	return err == nil
}

// lockFile takes an exclusive flock on path, waiting until ctx is done. flock blocks in
// the kernel with no timeout, so the wait runs in a goroutine that hands the lock back
// (or releases it) if ctx ends first.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	locked := make(chan error, 1)
	go func() { locked <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-locked:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
		}, nil
	case <-ctx.Done():
		go func() {
			if <-locked == nil {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			}
			f.Close()
		}()
		return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
	}
}

var javaVersionRE = regexp.MustCompile(`version "(\d+)(?:\.(\d+))?`)

// findJava returns the java binary ($JAVA_HOME/bin/java first, then PATH) and its
// `java -version` output after checking that it is Java 17 or newer, which Kafka 4 brokers
// require: an older JVM would only fail later with an UnsupportedClassVersionError buried
// in the broker log.
func findJava(ctx context.Context) (java, version string, err error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if p := filepath.Join(home, "bin", "java"); isExecutable(p) {
			java = p
		}
	}
	if java == "" {
		p, err := exec.LookPath("java")
		if err != nil {
			return "", "", fmt.Errorf("%w: %w", ErrJavaNotFound, err)
		}
		java = p
	}
	out, err := exec.CommandContext(ctx, java, "-version").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("%w: %s -version: %w: %s", ErrJavaNotFound, java, err, out)
	}
	m := javaVersionRE.FindSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("%w: cannot read the version of %s: %s", ErrJavaNotFound, java, out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	if major == 1 && m[2] != nil { // "1.8.0_292" style
		major, _ = strconv.Atoi(string(m[2]))
	}
	if major < 17 {
		return "", "", fmt.Errorf("%w: %s is Java %d", ErrJavaTooOld, java, major)
	}
	return java, string(out), nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailFile returns the last n lines of the file at path, reading at most its last 256 KiB.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ""
		}
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const maxTail = 256 << 10
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	off := max(0, st.Size()-maxTail)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(buf), n)
}
