package history

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/historyapi"
	"palaver.dev/services/internal/message"
)

// A message's key in the store is one integer, its row id, made of the
// room's tag, the partition and the offset: rows of a room are one id range
// (so the full-text index is scoped to a room by a rowid range), and ids
// order a room's rows by (partition, offset).
const (
	offsetBits    = 34 // 17 billion records per partition
	partitionBits = 10 // cursor.MaxPartitions
	maxTag        = 1<<(63-offsetBits-partitionBits) - 1
	maxOffset     = 1<<offsetBits - 1
)

func rowID(tag int64, partition int, offset int64) int64 {
	return tag<<(offsetBits+partitionBits) | int64(partition)<<offsetBits | offset
}

func splitRowID(id int64) (partition int, offset int64) {
	return int(id >> offsetBits & (1<<partitionBits - 1)), id & maxOffset
}

// Errors of the store; test them with errors.Is.
var (
	ErrNotServed = historyapi.ErrNotServed
	ErrBehind    = historyapi.ErrBehind
	ErrBadQuery  = historyapi.ErrBadRequest
)

const schema = `
CREATE TABLE IF NOT EXISTS rooms (
	name  TEXT PRIMARY KEY,
	topic TEXT NOT NULL,
	tag   INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
	room      TEXT NOT NULL,
	partition INTEGER NOT NULL,
	next      INTEGER NOT NULL,
	PRIMARY KEY (room, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
	rid         INTEGER PRIMARY KEY,
	tag         INTEGER NOT NULL,
	ts          INTEGER NOT NULL,
	id          TEXT NOT NULL,
	sender_id   TEXT NOT NULL,
	sender_name TEXT NOT NULL,
	text        TEXT NOT NULL,
	client_ts   INTEGER, -- the sender's clock, ms; NULL when it did not say
	ck          INTEGER NOT NULL DEFAULT 0 -- copyHash(sender_id, id)
);
` + textSchema + `;
`

// textSchema is the search index: contentless (the text is in messages),
// without positions (detail=none) nor per-row sizes (columnsize=0, which
// would cost a B-tree insert per row). A row leaves it by FTS5's 'delete'
// command with the text it was indexed with, read from messages
// (deleteRows). Stores made before columnsize=0 had contentless_delete=1;
// opening one builds its search index again (migrate).
const textSchema = `CREATE VIRTUAL TABLE IF NOT EXISTS messages_text USING fts5 (
	text, content='', columnsize=0, detail=none,
	tokenize='unicode61 remove_diacritics 2'
)`

// indexes are the table's secondary indexes: by time (jump to a date) and
// by a hash of the sender and client message id (later copies: an integer
// key is a fraction of the two strings' size and compares faster). A store
// rebuilt from empty builds them, with the search index, once its rows are
// in (FinishBuild); the absence of the index of copies marks a rebuild not
// finished yet.
const (
	copyIndex = `CREATE INDEX IF NOT EXISTS messages_copy ON messages (tag, ck)`
	timeIndex = `CREATE INDEX IF NOT EXISTS messages_time ON messages (tag, ts)`
	indexes   = copyIndex + ";\n" + timeIndex + ";"
)

// copyHash is the key of a message's copies in the index of copies: FNV-1a
// of the sender, a byte that valid UTF-8 never holds, and the client
// message id. Messages of other keys may share it; their strings tell them
// apart.
func copyHash(sender, id string) int64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(sender); i++ {
		h = (h ^ uint64(sender[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * prime
	}
	return int64(h)
}

// Store is the embedded database: the rows of every room the replica
// serves and, in the same transactions, the next offset to consume in each
// of their partitions. It is SQLite (through the pure-Go modernc.org/sqlite)
// in WAL mode: one writer connection, a pool of readers that never block
// it. See docs/history.md for why.
type Store struct {
	path string
	w    *sql.DB // the one writer connection
	r    *sql.DB // readers

	insert, copies [2]*sql.Stmt // one row, and insertChunk rows, per statement
	// a batch's other statements, prepared once: preparing costs about as
	// much as running them
	index, position, setPosition *sql.Stmt

	// ck checkpoints the write-ahead log into the database beside the
	// writer (see checkpoints); wake asks it to, stop and stopped end it.
	ck                  *sql.DB
	wake, stop, stopped chan struct{}
	// restartDue is set by the checkpointer when it has copied a log of
	// logRestartPages or more: the writer, when idle, restarts the log
	// (RestartLog). logMaxPages bounds the log's file whatever the
	// writer's load.
	restartDue atomic.Bool
	restart    chan struct{} // signals restartDue to an idle writer
	// copying is held by a checkpoint: SQLite lets one run at a time, and
	// refuses another at once rather than waiting for it.
	copying                      sync.Mutex
	logRestartPages, logMaxPages int64

	// dedupWindow is how long after a message a later copy of it is
	// recognised: the gateway's, so history keeps the copy readers see.
	dedupWindow time.Duration

	// building is set while the store is rebuilt from empty: rows go in
	// without the secondary indexes, the search index and the search for
	// later copies, which FinishBuild does in bulk. Written by the writer.
	building atomic.Bool
}

// busyTimeout is the longest a connection waits for another's lock.
const busyTimeout = 10 * time.Second

// OpenStore opens (creating if needed) the store in dir, with every index
// kept up to date row by row.
func OpenStore(dir string) (*Store, error) { return openStore(dir, 0, false) }

// storeFile is the database file of a replica's store i: history.db, then
// history-1.db, history-2.db...
func storeFile(i int) string {
	if i == 0 {
		return "history.db"
	}
	return fmt.Sprintf("history-%d.db", i)
}

// removeStoresFrom deletes the files of a replica's stores i and above
// (their rooms are rebuilt in the stores that now hold them).
func removeStoresFrom(dir string, i int) error {
	for ; ; i++ {
		path := filepath.Join(dir, storeFile(i))
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		for _, suffix := range []string{"-wal", "-shm", ""} {
			if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("history: remove store %d: %w", i, err)
			}
		}
	}
}

// openStore opens the replica's store i in dir. With bulk, a store created
// here is rebuilding (Building) until FinishBuild. A store whose rebuild
// was interrupted (a crash, a restart) goes on rebuilding, bulk or not.
func openStore(dir string, i int, bulk bool) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("history: store directory: %w", err)
	}
	path := filepath.Join(dir, storeFile(i))
	// synchronous=NORMAL in WAL mode: a commit survives a process crash
	// (it is in the OS's page cache), and a power cut may lose the
	// commits since the last checkpoint synced the log, but never tears
	// one; the positions lost with them are read again from Kafka.
	dsn := "file:" + path + fmt.Sprintf("?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()) +
		"&_pragma=cache_size(-32000)&_pragma=temp_store(MEMORY)&_txlock=immediate"
	// The writer never checkpoints inside a commit: the checkpointer
	// copies the log, and the writer restarts it between batches (see
	// checkpoints). A log started again from its beginning keeps its
	// file's size unless journal_size_limit cuts it back (at the first
	// commit after): a rebuild's index build passes through the log whole.
	w, err := sql.Open("sqlite", dsn+fmt.Sprintf("&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(%d)", walRestartPages*4096))
	if err != nil {
		return nil, fmt.Errorf("history: open store: %w", err)
	}
	w.SetMaxOpenConns(1)
	building, err := createSchema(w, bulk)
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("history: create schema in %s: %w", path, err)
	}
	// No merge work of the search index inside a commit: the writer does
	// it between batches (MergeIndex). FTS5's crisis merge (a level of 16
	// segments is merged at once) still bounds the segments under
	// sustained load.
	if _, err := w.Exec(`INSERT INTO messages_text (messages_text, rank) VALUES ('automerge', 0)`); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("history: configure the search index in %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("history: open store readers: %w", err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	ck, err := sql.Open("sqlite", dsn)
	if err != nil {
		_ = errors.Join(w.Close(), r.Close())
		return nil, fmt.Errorf("history: open store checkpointer: %w", err)
	}
	ck.SetMaxOpenConns(1)
	s := &Store{path: path, w: w, r: r, ck: ck, dedupWindow: roomhub.DefaultDedupWindow,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		restart: make(chan struct{}, 1), logRestartPages: walRestartPages, logMaxPages: walMaxPages}
	s.building.Store(building)
	go s.checkpoints()
	for q, stmt := range map[string]**sql.Stmt{
		`INSERT INTO messages_text (rowid, text) SELECT rid, text FROM messages WHERE rid IN (SELECT value FROM json_each(?))`: &s.index,
		`SELECT next FROM positions WHERE room = ? AND partition = ?`:                                                          &s.position,
		`INSERT INTO positions (room, partition, next) VALUES (?1, ?2, ?3)
			ON CONFLICT (room, partition) DO UPDATE SET next = CASE WHEN ?4 THEN excluded.next ELSE max(next, excluded.next) END`: &s.setPosition,
	} {
		if *stmt, err = w.Prepare(q); err != nil {
			break
		}
	}
	for i, n := range []int{1, insertChunk} {
		if err != nil {
			break
		}
		if s.insert[i], err = w.Prepare(`INSERT INTO messages (rid, tag, ts, id, sender_id, sender_name, text, client_ts, ck) VALUES ` +
			values(n, 9)); err != nil {
			break
		}
		if s.copies[i], err = w.Prepare(`SELECT rid, tag, sender_id, id, ts FROM messages WHERE (tag, ck) IN (VALUES ` +
			values(n, 2) + `)`); err != nil {
			break
		}
	}
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("history: prepare: %w", err)
	}
	return s, nil
}

// createSchema creates the tables, and the indexes unless the store is
// new and bulk is set, or was left rebuilding; it says whether the store
// is rebuilding.
func createSchema(w *sql.DB, bulk bool) (building bool, err error) {
	var tables, idx int
	if err := w.QueryRow(`SELECT count(*) FILTER (WHERE name = 'messages'),
		count(*) FILTER (WHERE name IN ('messages_copy', 'messages_client')) -- the latter before copyHash
		FROM sqlite_schema`).Scan(&tables, &idx); err != nil {
		return false, err
	}
	building = tables == 0 && bulk || tables == 1 && idx == 0
	if tables == 1 {
		if err := migrate(w, building); err != nil {
			return false, err
		}
	}
	if _, err := w.Exec(schema); err != nil {
		return false, err
	}
	if building {
		return true, nil
	}
	_, err = w.Exec(indexes)
	return false, err
}

// migrate brings a store of an earlier schema to this one, in one
// transaction, keeping its rows and positions: before copyHash (no ck
// column, an index of copies by the sender and client message id
// themselves), it adds the column, fills it and replaces the index; before
// columnsize=0 (a search index with contentless_delete=1, keeping a size
// record per row), it replaces the search index by textSchema's and
// indexes every row again. A store left rebuilding gets neither index: its
// rebuild builds them. Each costs a few µs of CPU per stored row, once.
func migrate(w *sql.DB, building bool) error {
	var ck int
	var text string
	if err := w.QueryRow(`SELECT (SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'ck'),
		coalesce((SELECT sql FROM sqlite_schema WHERE name = 'messages_text'), '')`).Scan(&ck, &text); err != nil {
		return fmt.Errorf("read the schema: %w", err)
	}
	oldText := strings.Contains(text, "contentless_delete")
	if ck == 1 && !oldText {
		return nil
	}
	tx, err := w.Begin()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if ck == 0 {
		if err := fillCopyHash(tx); err != nil {
			return fmt.Errorf("migrate the index of copies: %w", err)
		}
		qs := []string{`DROP INDEX IF EXISTS messages_client`}
		if !building {
			qs = append(qs, copyIndex)
		}
		for _, q := range qs {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("migrate the index of copies: %w", err)
			}
		}
	}
	if oldText {
		qs := []string{`DROP TABLE messages_text`, textSchema}
		if !building {
			qs = append(qs,
				fmt.Sprintf(`INSERT INTO messages_text (messages_text, rank) VALUES ('hashsize', %d)`, buildHashSize),
				`INSERT INTO messages_text (rowid, text) SELECT rid, text FROM messages`,
				`INSERT INTO messages_text (messages_text, rank) VALUES ('hashsize', 1048576)`)
		}
		for _, q := range qs {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("migrate the search index: %w", err)
			}
		}
	}
	return tx.Commit()
}

// fillCopyHash adds the ck column to messages and sets it on every row, a
// range of row ids at a time.
func fillCopyHash(tx *sql.Tx) error {
	if _, err := tx.Exec(`ALTER TABLE messages ADD COLUMN ck INTEGER NOT NULL DEFAULT 0`); err != nil {
		return err
	}
	set, err := tx.Prepare(`UPDATE messages SET ck = ? WHERE rid = ?`)
	if err != nil {
		return err
	}
	defer set.Close()
	type key struct {
		rid        int64
		sender, id string
	}
	keys := make([]key, 0, 10000)
	for after := int64(-1); ; after = keys[len(keys)-1].rid {
		keys = keys[:0]
		rs, err := tx.Query(`SELECT rid, sender_id, id FROM messages WHERE rid > ? ORDER BY rid LIMIT 10000`, after)
		if err != nil {
			return err
		}
		for rs.Next() {
			var k key
			if err := rs.Scan(&k.rid, &k.sender, &k.id); err != nil {
				_ = rs.Close()
				return err
			}
			keys = append(keys, k)
		}
		if err := errors.Join(rs.Err(), rs.Close()); err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		for _, k := range keys {
			if _, err := set.Exec(copyHash(k.sender, k.id), k.rid); err != nil {
				return err
			}
		}
	}
}

// Building reports whether the store is being rebuilt from empty: its rows
// are in, but neither their indexes nor the search index (FinishBuild
// builds them), and later copies are not left out yet. No query may be
// answered from it until then.
func (s *Store) Building() bool { return s.building.Load() }

// buildHashSize is how many bytes of pending entries the search index
// holds in memory while a rebuild indexes every row, before it writes them
// out as a segment: 32 MiB makes few segments, which leave no merge work
// among themselves (1 MiB, FTS5's default, which live batches keep, left
// about 0.8 µs a row of merges to do afterwards).
const buildHashSize = 32 << 20

// built is what FinishBuild found, per room tag.
type built struct {
	Rows   map[int64]int64 // rows stored
	Copies map[int64]int64 // later copies removed
}

// FinishBuild ends a rebuild: in one transaction, it removes the later
// copies of messages (the rule of dropCopies, applied to every row at
// once), builds the secondary indexes and indexes every row's text. It
// returns the rows stored and the later copies removed per room tag. A
// crash before its commit leaves the store rebuilding, to be finished
// again.
func (s *Store) FinishBuild(ctx context.Context) (built, error) {
	res := built{Rows: map[int64]int64{}}
	if !s.building.Load() {
		return res, nil
	}
	// The sorts that build the indexes go to temporary files, not memory:
	// they hold every row's key.
	if _, err := s.w.ExecContext(ctx, `PRAGMA temp_store = FILE`); err != nil {
		return res, fmt.Errorf("history: build indexes: %w", err)
	}
	defer func() { _, _ = s.w.Exec(`PRAGMA temp_store = MEMORY`) }()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("history: build indexes: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, copyIndex); err != nil {
		return res, fmt.Errorf("history: build indexes: %w", err)
	}
	if res.Copies, err = s.removeCopies(ctx, tx); err != nil {
		return res, err
	}
	for _, q := range []string{
		timeIndex,
		fmt.Sprintf(`INSERT INTO messages_text (messages_text, rank) VALUES ('hashsize', %d)`, buildHashSize),
		`INSERT INTO messages_text (rowid, text) SELECT rid, text FROM messages`,
		`INSERT INTO messages_text (messages_text, rank) VALUES ('hashsize', 1048576)`, // FTS5's default
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return res, fmt.Errorf("history: build indexes: %w", err)
		}
	}
	rs, err := tx.QueryContext(ctx, `SELECT tag, count(*) FROM messages GROUP BY tag`)
	if err != nil {
		return res, fmt.Errorf("history: count rows: %w", err)
	}
	for rs.Next() {
		var tag, n int64
		if err := rs.Scan(&tag, &n); err != nil {
			_ = rs.Close()
			return res, fmt.Errorf("history: count rows: %w", err)
		}
		res.Rows[tag] = n
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return res, fmt.Errorf("history: count rows: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("history: build indexes: %w", err)
	}
	s.building.Store(false)
	s.wakeCheckpointer()
	return res, nil
}

// removeCopies deletes the later copies among the stored rows, by
// dropCopies' rule: in each partition, a row with the sender and client
// message id of the last row kept before it, less than the dedup window
// later, is a later copy.
func (s *Store) removeCopies(ctx context.Context, tx *sql.Tx) (map[int64]int64, error) {
	rs, err := tx.QueryContext(ctx, `SELECT rid, tag, sender_id, id, ts FROM messages
		WHERE (tag, ck) IN (SELECT tag, ck FROM messages GROUP BY tag, ck HAVING count(*) > 1)
		ORDER BY tag, sender_id, id, rid`)
	if err != nil {
		return nil, fmt.Errorf("history: find later copies: %w", err)
	}
	var drop []int64
	copies := map[int64]int64{}
	var last copyKey
	var kept int64 // time of the last row kept of last
	window := s.dedupWindow.Milliseconds()
	for rs.Next() {
		var k copyKey
		var rid, ts int64
		if err := rs.Scan(&rid, &k.tag, &k.sender, &k.id, &ts); err != nil {
			_ = rs.Close()
			return nil, fmt.Errorf("history: find later copies: %w", err)
		}
		k.partition, _ = splitRowID(rid)
		if k == last && ts-kept < window {
			drop = append(drop, rid)
			copies[k.tag]++
			continue
		}
		last, kept = k, ts
	}
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return nil, fmt.Errorf("history: find later copies: %w", err)
	}
	for _, rid := range drop {
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE rid = ?`, rid); err != nil {
			return nil, fmt.Errorf("history: remove a later copy: %w", err)
		}
	}
	return copies, nil
}

// insertChunk is how many rows one statement inserts: one statement per
// row would cost more in the driver than in SQLite.
const insertChunk = 64

// values is n parenthesized groups of cols placeholders.
func values(n, cols int) string {
	group := "(?" + strings.Repeat(", ?", cols-1) + ")"
	return group + strings.Repeat(", "+group, n-1)
}

// Close closes the database.
func (s *Store) Close() error {
	close(s.stop)
	<-s.stopped
	return errors.Join(s.r.Close(), s.w.Close(), s.ck.Close())
}

const (
	// checkpointEvery is the shortest time between two checkpoints: each
	// copies a page changed by many commits in between once.
	checkpointEvery = time.Second
	// walRestartPages is the log's length, in pages (4 KiB), from which
	// the writer starts it again from its beginning as soon as it is idle
	// after the checkpointer copied it: 2 to 3 seconds of writes at 1,000
	// messages a second over 100 rooms. A restart costs the writer the
	// checkpoint's two syncs, so not much less.
	walRestartPages = 16384
	// walMaxPages bounds the log's file: there, the writer restarts the
	// log and empties the file after its batch even when records wait,
	// waiting for readers if needed. Only a writer that seldom idles gets
	// there.
	walMaxPages = 32768
	// walFrameBytes is the size of a page in the log with its frame header.
	walFrameBytes = 4096 + 24
)

// checkpoints copies the write-ahead log into the database, on its own
// connection, after commits and at most once every checkpointEvery: the
// writer's commits then only append to the log, and never wait for a
// checkpoint's copy and its two syncs (with synchronous=NORMAL, the
// log is synced before it is copied and the database after). A passive
// checkpoint never blocks the writer or the readers; one that fails is
// tried again after the next commit.
//
// A passive checkpoint copies the log but rarely lets it start again
// from its beginning: that happens only when the writer's next transaction
// finds every page copied, and a writer committing every few milliseconds
// has added some by then. So once the log is logRestartPages long and
// copied, the checkpointer asks the writer (restartDue), which restarts it
// when no record waits (RestartLog): by then it has little left to copy.
func (s *Store) checkpoints() {
	defer close(s.stopped)
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		var busy, logged, copied int64
		s.copying.Lock()
		err := s.ck.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logged, &copied)
		s.copying.Unlock()
		if err == nil && busy == 0 && copied == logged && logged >= s.logRestartPages {
			s.restartDue.Store(true)
			select {
			case s.restart <- struct{}{}:
			default:
			}
		}
		select {
		case <-time.After(checkpointEvery):
		case <-s.stop:
			return
		}
	}
}

// LogRestartDue says whether the writer should restart the log now: the
// checkpointer has copied a long log, or the log has reached its bound
// (then over is true).
func (s *Store) LogRestartDue() (due, over bool) {
	over = s.logPages() >= s.logMaxPages
	return over || s.restartDue.Load(), over
}

// restartSignal is ready when the checkpointer asks for a restart of the
// log: a writer waiting for records then calls LogRestartDue.
func (s *Store) restartSignal() <-chan struct{} { return s.restart }

// logPages is the size of the log's file in pages: the longest the log has
// been since the writer last emptied it at its bound, or since the first
// commit on a log started again from its beginning cut the file back to
// journal_size_limit (otherwise such a log reuses the file).
func (s *Store) logPages() int64 {
	fi, err := os.Stat(s.path + "-wal")
	if err != nil {
		return 0
	}
	return fi.Size() / walFrameBytes
}

// RestartLog copies what is left of the log into the database and starts
// the log again from its beginning (a RESTART checkpoint on the writer's
// connection), and says whether it could. It must be called by the writer
// between transactions. Unless wait, it gives up at once when a reader
// still reads pages of the log or the checkpointer is copying it (then the
// checkpointer asks again after its next copy). With wait, for a log at
// its bound, it waits for them as long as a writer waits for a lock, and
// empties the log's file too (TRUNCATE).
func (s *Store) RestartLog(ctx context.Context, wait bool) (bool, error) {
	c, err := s.w.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("history: restart the log: %w", err)
	}
	defer c.Close()
	if wait {
		s.copying.Lock()
	} else if !s.copying.TryLock() {
		return false, nil
	}
	defer s.copying.Unlock()
	if !wait {
		if _, err := c.ExecContext(ctx, `PRAGMA busy_timeout = 0`); err != nil {
			return false, fmt.Errorf("history: restart the log: %w", err)
		}
		defer func() {
			_, _ = c.ExecContext(context.Background(), fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeout.Milliseconds()))
		}()
	}
	s.restartDue.Store(false)
	var busy, logged, copied int64
	mode := "RESTART"
	if wait {
		mode = "TRUNCATE"
	}
	if err := c.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &logged, &copied); err != nil {
		return false, fmt.Errorf("history: restart the log: %w", err)
	}
	return busy == 0, nil
}

// Size returns the bytes the store takes on disk (database and WAL).
func (s *Store) Size() int64 {
	var n int64
	for _, p := range []string{s.path, s.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// storedRoom is a room the store holds rows of.
type storedRoom struct {
	Topic string
	Tag   int64
	Next  map[int]int64 // committed position per partition
}

// Rooms returns every room in the store with its committed positions.
func (s *Store) Rooms(ctx context.Context) (map[string]storedRoom, error) {
	rows, err := s.w.QueryContext(ctx, `SELECT name, topic, tag FROM rooms`)
	if err != nil {
		return nil, fmt.Errorf("history: list rooms: %w", err)
	}
	out := map[string]storedRoom{}
	for rows.Next() {
		var name string
		var r storedRoom
		if err := rows.Scan(&name, &r.Topic, &r.Tag); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("history: list rooms: %w", err)
		}
		r.Next = map[int]int64{}
		out[name] = r
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("history: list rooms: %w", err)
	}
	rows, err = s.w.QueryContext(ctx, `SELECT room, partition, next FROM positions`)
	if err != nil {
		return nil, fmt.Errorf("history: list positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var p int
		var next int64
		if err := rows.Scan(&name, &p, &next); err != nil {
			return nil, fmt.Errorf("history: list positions: %w", err)
		}
		if r, ok := out[name]; ok {
			r.Next[p] = next
		}
	}
	return out, rows.Err()
}

// AddRoom records a room on its topic and returns its tag. A room stored on
// another topic (deleted and created again under the same name) loses its
// rows first: they belong to a topic that no longer backs the room.
func (s *Store) AddRoom(ctx context.Context, name, topic string) (int64, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("history: add room %q: %w", name, err)
	}
	defer func() { _ = tx.Rollback() }()
	var tag int64
	var had string
	err = tx.QueryRowContext(ctx, `SELECT topic, tag FROM rooms WHERE name = ?`, name).Scan(&had, &tag)
	switch {
	case err == nil && had == topic:
		return tag, nil
	case err == nil:
		if err := s.dropRoom(ctx, tx, name, tag); err != nil {
			return 0, err
		}
	case !errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("history: add room %q: %w", name, err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(tag), 0) + 1 FROM rooms`).Scan(&tag); err != nil {
		return 0, fmt.Errorf("history: add room %q: %w", name, err)
	}
	if tag > maxTag {
		return 0, fmt.Errorf("history: add room %q: out of room tags", name)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rooms (name, topic, tag) VALUES (?, ?, ?)`, name, topic, tag); err != nil {
		return 0, fmt.Errorf("history: add room %q: %w", name, err)
	}
	return tag, tx.Commit()
}

// DropRoom removes a room, its rows and its positions.
func (s *Store) DropRoom(ctx context.Context, name string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("history: drop room %q: %w", name, err)
	}
	defer func() { _ = tx.Rollback() }()
	var tag int64
	switch err := tx.QueryRowContext(ctx, `SELECT tag FROM rooms WHERE name = ?`, name).Scan(&tag); {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("history: drop room %q: %w", name, err)
	}
	if err := s.dropRoom(ctx, tx, name, tag); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Store) dropRoom(ctx context.Context, tx *sql.Tx, name string, tag int64) error {
	lo, hi := rowID(tag, 0, 0), rowID(tag+1, 0, 0)
	for _, q := range s.deleteRows() {
		if _, err := tx.ExecContext(ctx, q, lo, hi); err != nil {
			return fmt.Errorf("history: drop room %q: %w", name, err)
		}
	}
	for _, q := range []string{`DELETE FROM positions WHERE room = ?`, `DELETE FROM rooms WHERE name = ?`} {
		if _, err := tx.ExecContext(ctx, q, name); err != nil {
			return fmt.Errorf("history: drop room %q: %w", name, err)
		}
	}
	return nil
}

// op is one change to the store, applied in order within a partition:
// a record consumed (Msg nil for a record that is not a valid envelope,
// which only moves the position), or a trim of what retention removed.
type op struct {
	Room      string
	Tag       int64
	Partition int
	Offset    int64 // the record's offset; for a trim, the partition's new start
	Msg       *message.Stored
	Trim      bool
	Reset     bool // with Trim: drop every row of the partition (its topic was re-created)

	control func(*Store) error // run by the writer between batches
	done    chan error
}

// applied counts, per room, what a batch removed or did not store.
type applied struct {
	Trimmed map[string]int64 // rows removed by trims
	Copies  map[string]int64 // later copies of messages, not stored
}

// Apply writes ops in one transaction, with the position after each
// partition's last op, and returns the positions written and the rows
// trimmed and later copies left out per room. Replaying an op whose
// position is already committed, or written earlier in ops, changes
// nothing.
func (s *Store) Apply(ctx context.Context, ops []op) (map[posKey]position, applied, error) {
	res := applied{Trimmed: map[string]int64{}, Copies: map[string]int64{}}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, res, fmt.Errorf("history: begin batch: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Every row a partition holds is below its committed position (rows
	// and positions are committed together; positions only move back
	// with a reset, which deletes the partition's rows): an op below it,
	// or below an op taken earlier in the batch, is a replay.
	floor, err := s.committedPositions(ctx, tx, ops)
	if err != nil {
		return nil, res, err
	}
	next := map[posKey]int64{}
	reset := map[posKey]bool{}
	var rows []*op
	for i := range ops {
		o := &ops[i]
		k := posKey{o.Room, o.Partition}
		if o.Trim {
			// Rows before the trim are written first: it removes them.
			if err := s.insertRows(ctx, tx, rows, res.Copies); err != nil {
				return nil, res, err
			}
			rows = rows[:0]
			n, err := s.trim(ctx, tx, o)
			if err != nil {
				return nil, res, err
			}
			if n > 0 {
				res.Trimmed[o.Room] += n
			}
			if o.Reset {
				next[k], reset[k], floor[k] = o.Offset, true, o.Offset
			} else if next[k] < o.Offset {
				next[k] = o.Offset
			}
			continue
		}
		if o.Offset < floor[k] {
			continue
		}
		floor[k] = o.Offset + 1
		next[k] = max(next[k], o.Offset+1)
		if o.Msg != nil {
			rows = append(rows, o)
		}
	}
	if err := s.insertRows(ctx, tx, rows, res.Copies); err != nil {
		return nil, res, err
	}
	// Positions only move forward, except where a re-created topic reset
	// them.
	for k, n := range next {
		if _, err := tx.StmtContext(ctx, s.setPosition).ExecContext(ctx, k.room, k.partition, n, reset[k]); err != nil {
			return nil, res, fmt.Errorf("history: commit position of %s/%d: %w", k.room, k.partition, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, res, fmt.Errorf("history: commit batch: %w", err)
	}
	s.wakeCheckpointer()
	out := make(map[posKey]position, len(next))
	for k, n := range next {
		out[k] = position{next: n, reset: reset[k]}
	}
	return out, res, nil
}

// wakeCheckpointer tells the checkpointer that the log has grown.
func (s *Store) wakeCheckpointer() {
	select {
	case s.wake <- struct{}{}:
	default: // a checkpoint is due already
	}
}

// mergeStep is the most pages of the search index one idle merge writes
// (MergeIndex): a record that arrives meanwhile waits for one such step.
const mergeStep = 8

// MergeIndex does up to pages pages of the search index's merge work, in a
// transaction of its own, and says whether there was any. Every batch
// adds a segment to the index, which needs merging with others to keep
// searches fast; FTS5 would do that work inside the commits (automerge),
// in lumps (every 64 leaf pages written, up to 64 pages per level of the
// index: tens of milliseconds of CPU for a commit of a few rows), so the
// store turns it off and the writer calls this while no record waits: the
// work is done in small steps between batches. Under sustained load, where
// the writer never idles, FTS5's crisis merge (a level's 16 segments
// merged into one, inside the commit that adds the 16th) bounds the
// segments. It touches neither rows nor positions.
func (s *Store) MergeIndex(ctx context.Context, pages int) (bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("history: merge index: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// The index's structure record (row 10 of its data) is written when,
	// and only when, a merge does some work.
	var before, after []byte
	const structure = `SELECT block FROM messages_text_data WHERE id = 10`
	if err := tx.QueryRowContext(ctx, structure).Scan(&before); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("history: merge index: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO messages_text (messages_text, rank) VALUES ('merge', ?)`, pages); err != nil {
		return false, fmt.Errorf("history: merge index: %w", err)
	}
	if err := tx.QueryRowContext(ctx, structure).Scan(&after); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("history: merge index: %w", err)
	}
	if bytes.Equal(before, after) {
		return false, nil // nothing written: let the rollback end it
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("history: merge index: %w", err)
	}
	s.wakeCheckpointer()
	return true, nil
}

// committedPositions returns the committed position of every partition of ops.
func (s *Store) committedPositions(ctx context.Context, tx *sql.Tx, ops []op) (map[posKey]int64, error) {
	out := map[posKey]int64{}
	stmt := tx.StmtContext(ctx, s.position)
	for i := range ops {
		k := posKey{ops[i].Room, ops[i].Partition}
		if _, ok := out[k]; ok || ops[i].control != nil {
			continue
		}
		var next int64
		err := stmt.QueryRowContext(ctx, k.room, k.partition).Scan(&next)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("history: read position of %s/%d: %w", k.room, k.partition, err)
		}
		out[k] = next
	}
	return out, nil
}

// insertRows inserts the rows of ops (none of them stored: Apply leaves
// replays out), and indexes their text; a later copy of a message is
// neither (counted per room in copies).
func (s *Store) insertRows(ctx context.Context, tx *sql.Tx, ops []*op, copies map[string]int64) error {
	// In row id order: FTS5 writes its pending entries out as a new
	// segment whenever a row id is not above the previous one, so rooms
	// interleaved in a batch would cut it into a segment per row (and the
	// table's B-tree likes ordered inserts too).
	slices.SortFunc(ops, func(a, b *op) int {
		return cmp.Compare(rowID(a.Tag, a.Partition, a.Offset), rowID(b.Tag, b.Partition, b.Offset))
	})
	building := s.building.Load()
	if !building { // else FinishBuild removes them
		var err error
		if ops, err = s.dropCopies(ctx, tx, ops, copies); err != nil {
			return err
		}
	}
	args := make([]any, 0, 9*insertChunk)
	inserted := make([]int64, 0, len(ops))
	for len(ops) > 0 {
		n, stmt := 1, s.insert[0]
		if len(ops) >= insertChunk {
			n, stmt = insertChunk, s.insert[1]
		}
		args = args[:0]
		for _, o := range ops[:n] {
			m := o.Msg
			rid := rowID(o.Tag, o.Partition, o.Offset)
			var client any // NULL
			if !m.ClientTime.IsZero() {
				client = m.ClientTime.UnixMilli()
			}
			args = append(args, rid, o.Tag, m.Time.UnixMilli(), m.ID, m.SenderID, m.SenderName, m.Text, client, copyHash(m.SenderID, m.ID))
			inserted = append(inserted, rid)
		}
		if _, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("history: insert %d rows: %w", n, err)
		}
		ops = ops[n:]
	}
	if len(inserted) == 0 || building {
		return nil
	}
	// One statement for the batch: FTS5 writes its pending entries out at
	// the start of every statement that may need undoing on its own (a
	// multi-row insert does), so a statement per chunk would cut the
	// batch's index entries into a segment per chunk.
	list := make([]byte, 0, 20*len(inserted))
	list = append(list, '[')
	for i, rid := range inserted {
		if i > 0 {
			list = append(list, ',')
		}
		list = strconv.AppendInt(list, rid, 10)
	}
	list = append(list, ']')
	if _, err := tx.StmtContext(ctx, s.index).ExecContext(ctx, string(list)); err != nil {
		return fmt.Errorf("history: index %d rows: %w", len(inserted), err)
	}
	return nil
}

// copyKey finds the stored copies of a message: a room's rows of one
// partition with one sender and client message id.
type copyKey struct {
	tag       int64
	partition int
	sender    string
	id        string
}

// storedCopy is a row kept for a message: its row id and its time.
type storedCopy struct {
	rid int64
	ts  int64 // ms
}

// dropCopies returns ops (in row id order) without the later copies of
// messages, counting them per room in copies. The rule is the gateway's
// (roomhub's duplicate): a record is a later copy when a copy kept before it
// in the same partition, with the same sender and client message id, is
// less than the dedup window older, in record time. The copy it is
// measured against is the last one kept below it, rows of this batch
// included, so a rebuild keeps the same rows as the replica that consumed
// the records one batch at a time.
func (s *Store) dropCopies(ctx context.Context, tx *sql.Tx, ops []*op, copies map[string]int64) ([]*op, error) {
	kept := make(map[copyKey][]storedCopy, len(ops)) // in row id order
	args := make([]any, 0, 2*insertChunk)
	for rest := ops; len(rest) > 0; {
		n, stmt := 1, s.copies[0]
		if len(rest) >= insertChunk {
			n, stmt = insertChunk, s.copies[1]
		}
		args = args[:0]
		for _, o := range rest[:n] {
			args = append(args, o.Tag, copyHash(o.Msg.SenderID, o.Msg.ID))
		}
		rs, err := tx.StmtContext(ctx, stmt).QueryContext(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("history: find copies of %d rows: %w", n, err)
		}
		for rs.Next() {
			var c storedCopy
			var k copyKey
			if err := rs.Scan(&c.rid, &k.tag, &k.sender, &k.id, &c.ts); err != nil {
				_ = rs.Close()
				return nil, fmt.Errorf("history: find copies of %d rows: %w", n, err)
			}
			k.partition, _ = splitRowID(c.rid)
			if !slices.Contains(kept[k], c) {
				kept[k] = append(kept[k], c)
			}
		}
		if err := errors.Join(rs.Err(), rs.Close()); err != nil {
			return nil, fmt.Errorf("history: find copies of %d rows: %w", n, err)
		}
		rest = rest[n:]
	}
	for _, cs := range kept {
		slices.SortFunc(cs, func(a, b storedCopy) int { return cmp.Compare(a.rid, b.rid) })
	}
	window := s.dedupWindow.Milliseconds()
	out := ops[:0]
	for _, o := range ops {
		k := copyKey{o.Tag, o.Partition, o.Msg.SenderID, o.Msg.ID}
		rid, ts := rowID(o.Tag, o.Partition, o.Offset), o.Msg.Time.UnixMilli()
		cs := kept[k]
		i, _ := slices.BinarySearchFunc(cs, rid, func(c storedCopy, rid int64) int { return cmp.Compare(c.rid, rid) })
		if i < len(cs) && cs[i].rid == rid { // a replay of a kept row
			out = append(out, o)
			continue
		}
		if i > 0 && ts-cs[i-1].ts < window {
			copies[o.Room]++
			continue
		}
		kept[k] = slices.Insert(cs, i, storedCopy{rid, ts})
		out = append(out, o)
	}
	return out, nil
}

// deleteRows are the statements that delete the rows with ids in [?1,
// ?2), the last one from the table: from the search index first, unless
// the store is rebuilding (the index has none of them yet).
func (s *Store) deleteRows() []string {
	table := `DELETE FROM messages WHERE rid >= ?1 AND rid < ?2`
	if s.building.Load() {
		return []string{table}
	}
	return []string{`INSERT INTO messages_text (messages_text, rowid, text) SELECT 'delete', rid, text FROM messages WHERE rid >= ?1 AND rid < ?2`, table}
}

// trim deletes a partition's rows below o.Offset (all of them on a reset).
func (s *Store) trim(ctx context.Context, tx *sql.Tx, o *op) (int64, error) {
	lo, hi := rowID(o.Tag, o.Partition, 0), rowID(o.Tag, o.Partition, min(o.Offset, maxOffset))
	if o.Reset {
		hi = rowID(o.Tag, o.Partition, maxOffset)
	}
	var res sql.Result
	for _, q := range s.deleteRows() {
		var err error
		if res, err = tx.ExecContext(ctx, q, lo, hi); err != nil {
			return 0, fmt.Errorf("history: trim %s/%d below %d: %w", o.Room, o.Partition, o.Offset, err)
		}
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// position is a partition's position written by a batch: the next offset
// to consume, which replaces the committed one when reset, else only moves
// it forward.
type position struct {
	next  int64
	reset bool
}

type posKey struct {
	room      string
	partition int
}

// msTime converts a stored millisecond timestamp.
func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
