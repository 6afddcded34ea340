package history

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// oldSchema is the store's schema before copyHash and columnsize=0: an
// index of copies by the sender and client message id themselves, and a
// search index keeping a size record per row (contentless_delete=1).
const oldSchema = `
CREATE TABLE rooms (name TEXT PRIMARY KEY, topic TEXT NOT NULL, tag INTEGER NOT NULL UNIQUE) WITHOUT ROWID;
CREATE TABLE positions (room TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
	PRIMARY KEY (room, partition)) WITHOUT ROWID;
CREATE TABLE messages (
	rid INTEGER PRIMARY KEY, tag INTEGER NOT NULL, ts INTEGER NOT NULL, id TEXT NOT NULL,
	sender_id TEXT NOT NULL, sender_name TEXT NOT NULL, text TEXT NOT NULL, client_ts INTEGER);
CREATE VIRTUAL TABLE messages_text USING fts5 (
	text, content='', contentless_delete=1, detail=none, tokenize='unicode61 remove_diacritics 2');
`

// writeOldStore makes a store file of the old schema in dir: room lobby
// (tag 1) with six messages of u-1 (ids m-0-0 to m-0-5, texts "hello
// numberN"), consumed up to offset 6; its indexes unless building.
func writeOldStore(t *testing.T, dir string, t0 time.Time, building bool) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, storeFile(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	qs := []string{oldSchema,
		`INSERT INTO rooms VALUES ('lobby', 'palaver.room.default.lobby', 1)`,
		`INSERT INTO positions VALUES ('lobby', 0, 6)`}
	for i := range 6 {
		qs = append(qs, fmt.Sprintf(`INSERT INTO messages VALUES (%d, 1, %d, 'm-0-%d', 'u-1', 'U', 'hello number%d', NULL)`,
			rowID(1, 0, int64(i)), t0.Add(time.Duration(i)*time.Second).UnixMilli(), i, i))
	}
	if !building {
		qs = append(qs, `CREATE INDEX messages_client ON messages (tag, sender_id, id)`,
			`CREATE INDEX messages_time ON messages (tag, ts)`,
			`INSERT INTO messages_text (rowid, text) SELECT rid, text FROM messages`)
	}
	for _, q := range qs {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A store of the schema before copyHash and columnsize=0 is migrated in
// place when opened: rows and positions kept, later copies still
// recognised, the search index rebuilt and trimmed as before; one left
// rebuilding goes on rebuilding.
func TestStoreMigratesAnOldSchema(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for _, building := range []bool{false, true} {
		t.Run(fmt.Sprintf("building=%v", building), func(t *testing.T) {
			dir := t.TempDir()
			writeOldStore(t, dir, t0, building)
			st, err := openStore(dir, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx := t.Context()
			if st.Building() != building {
				t.Fatalf("building %v, want %v", st.Building(), building)
			}
			var def string
			var client, ck int
			if err := st.w.QueryRow(`SELECT (SELECT sql FROM sqlite_schema WHERE name = 'messages_text'),
				(SELECT count(*) FROM sqlite_schema WHERE name = 'messages_client'),
				(SELECT count(*) FROM messages WHERE ck = 0)`).Scan(&def, &client, &ck); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(def, "contentless_delete") || !strings.Contains(def, "columnsize=0") || client != 0 || ck != 0 {
				t.Fatalf("after the migration: search index %q, old index %d, rows without a hash %d", def, client, ck)
			}
			if building {
				if _, err := st.FinishBuild(ctx); err != nil {
					t.Fatal(err)
				}
			}
			rooms, err := st.Rooms(ctx)
			if err != nil || rooms["lobby"].Tag != 1 || rooms["lobby"].Next[0] != 6 {
				t.Fatalf("rooms %+v %v", rooms, err)
			}
			// A later copy of a stored message is recognised; a new one is stored.
			copyOf := stored("lobby", 0, 6, t0.Add(10*time.Second), "u-1", "hello again")
			copyOf.ID = "m-0-2"
			_, res, err := st.Apply(ctx, []op{
				{Room: "lobby", Tag: 1, Offset: 6, Msg: copyOf},
				{Room: "lobby", Tag: 1, Offset: 7, Msg: stored("lobby", 0, 7, t0.Add(11*time.Second), "u-1", "hello number7")},
			})
			if err != nil || res.Copies["lobby"] != 1 {
				t.Fatalf("copies %v, %v", res.Copies, err)
			}
			search := func() []string {
				t.Helper()
				terms, err := parseQuery("hello")
				if err != nil {
					t.Fatal(err)
				}
				rows, _, err := st.search(ctx, 1, 1, terms, "", nil, 50)
				if err != nil {
					t.Fatal(err)
				}
				return texts(rows)
			}
			want := []string{"hello number7", "hello number5", "hello number4", "hello number3", "hello number2", "hello number1", "hello number0"}
			if got := search(); !slices.Equal(got, want) {
				t.Fatalf("search %q, want %q", got, want)
			}
			// The migrated search index loses what retention removed.
			if _, res, err := st.Apply(ctx, []op{{Room: "lobby", Tag: 1, Offset: 3, Trim: true}}); err != nil || res.Trimmed["lobby"] != 3 {
				t.Fatalf("trim %v, %v", res.Trimmed, err)
			}
			if got := search(); !slices.Equal(got, want[:4]) {
				t.Fatalf("search after the trim %q, want %q", got, want[:4])
			}
		})
	}
}
