package history

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/historyapi"
)

// The API's types, defined once in historyapi.
type (
	Message    = historyapi.Message
	Sender     = historyapi.Sender
	Segment    = historyapi.Segment
	Page       = historyapi.Page
	SearchPage = historyapi.SearchPage
)

// row is a message as read from the store.
type row struct {
	rid                      int64
	ts                       int64
	id, senderID, senderName string
	text                     string
	clientTS                 sql.NullInt64
	partition                int
	offset                   int64
}

func (r *row) message(room string) Message {
	name := r.senderName
	if name == "" {
		name = r.senderID
	}
	m := Message{
		Op: "message", Room: room, ID: r.id, Sender: Sender{ID: r.senderID, Name: name}, Text: r.text,
		Time: msTime(r.ts), Partition: r.partition, Offset: r.offset,
	}
	if r.clientTS.Valid {
		m.ClientTime = msTime(r.clientTS.Int64)
	}
	return m
}

func scanRows(rows *sql.Rows) ([]row, error) {
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.rid, &r.ts, &r.id, &r.senderID, &r.senderName, &r.text, &r.clientTS); err != nil {
			return nil, err
		}
		r.partition, r.offset = splitRowID(r.rid)
		out = append(out, r)
	}
	return out, rows.Err()
}

const rowColumns = `rid, ts, id, sender_id, sender_name, text, client_ts`

// byTime orders rows as readers order a room: by (time, partition, offset).
func byTime(a, b row) int {
	return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.rid, b.rid))
}

// before reads the newest limit messages below bound (per partition: the
// offsets under bound's next, or all stored in a partition bound lacks),
// oldest first. start is the position of the page's first message in each
// partition; older tells whether anything older is stored.
func (s *Store) before(ctx context.Context, tag int64, partitions int, bound map[int]int64, limit int) (rows []row, start map[int]int64, older bool, err error) {
	start = map[int]int64{}
	fetched := map[int]int{}
	for p := range partitions {
		hi := rowID(tag, p+1, 0)
		if next, ok := bound[p]; ok {
			start[p] = next
			hi = rowID(tag, p, min(next, maxOffset))
		}
		rs, err := s.r.QueryContext(ctx, `SELECT `+rowColumns+` FROM messages WHERE rid >= ? AND rid < ? ORDER BY rid DESC LIMIT ?`,
			rowID(tag, p, 0), hi, limit+1)
		if err != nil {
			return nil, nil, false, fmt.Errorf("history: page before: %w", err)
		}
		got, err := scanRows(rs)
		if err != nil {
			return nil, nil, false, fmt.Errorf("history: page before: %w", err)
		}
		fetched[p] = len(got)
		rows = append(rows, got...)
	}
	rows = backPage(rows, limit)
	kept := map[int]int{}
	for _, r := range rows {
		if kept[r.partition] == 0 || r.offset < start[r.partition] {
			start[r.partition] = r.offset
		}
		kept[r.partition]++
	}
	for p, n := range fetched {
		older = older || n > kept[p]
	}
	return rows, start, older, nil
}

// after reads the oldest limit messages from position from (per partition:
// from its next offset, or from the start where from has none), oldest
// first.
func (s *Store) after(ctx context.Context, tag int64, partitions int, from map[int]int64, limit int) ([]row, error) {
	var rows []row
	for p := range partitions {
		rs, err := s.r.QueryContext(ctx, `SELECT `+rowColumns+` FROM messages WHERE rid >= ? AND rid < ? ORDER BY rid LIMIT ?`,
			rowID(tag, p, min(from[p], maxOffset)), rowID(tag, p+1, 0), limit)
		if err != nil {
			return nil, fmt.Errorf("history: page after: %w", err)
		}
		got, err := scanRows(rs)
		if err != nil {
			return nil, fmt.Errorf("history: page after: %w", err)
		}
		rows = append(rows, got...)
	}
	return forwardPage(rows, limit), nil
}

// A page's position is an offset per partition, so a page read backward
// holds, in each partition, every row read from its start on (forward: up
// to its end). Where times do not go backward within a partition (the
// broker's clock, as room topics keep it) the newest (oldest) limit rows
// by time are such a page; where they do (a broker's clock stepped back),
// a row read and left out of the page ends the partition's part of it, so
// no row is listed twice or skipped, and the page holds at least the
// partition's last (first) row whose place in time comes first.

// backPage is the page of up to limit rows, oldest first, read backward
// from rows (the newest of each partition).
func backPage(rows []row, limit int) []row {
	slices.SortFunc(rows, byTime)
	if len(rows) <= limit {
		return rows
	}
	left := map[int]int64{} // per partition, the newest offset left out
	for _, r := range rows[:len(rows)-limit] {
		if o, ok := left[r.partition]; !ok || r.offset > o {
			left[r.partition] = r.offset
		}
	}
	var page []row
	for _, r := range rows[len(rows)-limit:] {
		if o, ok := left[r.partition]; !ok || r.offset > o {
			page = append(page, r)
		}
	}
	if len(page) == 0 { // the newest row of each partition: the newest of them
		for i := len(rows) - 1; i >= 0; i-- {
			if rows[i].offset == newestOffset(rows, rows[i].partition) {
				return rows[i : i+1]
			}
		}
	}
	return page
}

// forwardPage is the page of up to limit rows, oldest first, read forward
// from rows (the oldest of each partition).
func forwardPage(rows []row, limit int) []row {
	slices.SortFunc(rows, byTime)
	if len(rows) <= limit {
		return rows
	}
	left := map[int]int64{} // per partition, the oldest offset left out
	for _, r := range rows[limit:] {
		if o, ok := left[r.partition]; !ok || r.offset < o {
			left[r.partition] = r.offset
		}
	}
	var page []row
	for _, r := range rows[:limit] {
		if o, ok := left[r.partition]; !ok || r.offset < o {
			page = append(page, r)
		}
	}
	if len(page) == 0 { // the oldest row of each partition: the oldest of them
		for _, r := range rows {
			if r.offset == oldestOffset(rows, r.partition) {
				return []row{r}
			}
		}
	}
	return page
}

func newestOffset(rows []row, p int) int64 {
	o := int64(-1)
	for _, r := range rows {
		if r.partition == p {
			o = max(o, r.offset)
		}
	}
	return o
}

func oldestOffset(rows []row, p int) int64 {
	o := int64(maxOffset)
	for _, r := range rows {
		if r.partition == p {
			o = min(o, r.offset)
		}
	}
	return o
}

// split returns, per partition, the offset of the first message stored at
// or after t, or end[p] when there is none.
func (s *Store) split(ctx context.Context, tag int64, partitions int, t time.Time, end map[int]int64) (map[int]int64, error) {
	out := map[int]int64{}
	for p := range partitions {
		var rid int64
		err := s.r.QueryRowContext(ctx, `SELECT rid FROM messages WHERE tag = ? AND ts >= ? AND rid >= ? AND rid < ? ORDER BY ts, rid LIMIT 1`,
			tag, t.UnixMilli(), rowID(tag, p, 0), rowID(tag, p+1, 0)).Scan(&rid)
		switch {
		case err == sql.ErrNoRows:
			out[p] = end[p]
		case err != nil:
			return nil, fmt.Errorf("history: find %v: %w", t, err)
		default:
			_, out[p] = splitRowID(rid)
		}
	}
	return out, nil
}

// maxTerms bounds the words of a search.
const maxTerms = 16

// term is one word of a search query; prefix when it ended in '*'.
type term struct {
	word   string
	prefix bool
}

// parseQuery reads a user's query: words (runs of letters and digits, as
// the index's tokenizer cuts text), each optionally ending in '*' for a
// prefix search. Everything else separates words, so no query syntax of
// the index reaches it: every word is quoted.
func parseQuery(q string) ([]term, error) {
	if len(q) > historyapi.MaxQueryBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadQuery, historyapi.MaxQueryBytes)
	}
	if !utf8.ValidString(q) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrBadQuery)
	}
	var terms []term
	rs := []rune(q)
	for i := 0; i < len(rs); {
		if !isTokenRune(rs[i]) {
			i++
			continue
		}
		j := i
		for j < len(rs) && isTokenRune(rs[j]) {
			j++
		}
		// A word typed with combining accents stays one word, as the
		// index keeps it; one of accents alone is no word.
		t := term{word: strings.ToLower(string(rs[i:j]))}
		if j < len(rs) && rs[j] == '*' {
			t.prefix = true
		}
		if foldWord(t.word) != "" {
			terms = append(terms, t)
		}
		i = j
	}
	switch {
	case len(terms) == 0:
		return nil, fmt.Errorf("%w: no words to search for", ErrBadQuery)
	case len(terms) > maxTerms:
		return nil, fmt.Errorf("%w: more than %d words", ErrBadQuery, maxTerms)
	}
	return terms, nil
}

// isWordRune matches the index tokenizer's token characters (unicode61:
// letters, numbers and private-use characters).
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.Co, r)
}

// matchExpr is the index's query for terms: every word, quoted.
func matchExpr(terms []term) string {
	var b strings.Builder
	for i, t := range terms {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(`"` + t.word + `"`)
		if t.prefix {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// searchKey is where a search page continues: below this (time, row id).
type searchKey struct {
	ts, rid int64
}

func (k searchKey) String() string {
	b := binary.AppendVarint([]byte{1}, k.ts)
	return base64.RawURLEncoding.EncodeToString(binary.AppendVarint(b, k.rid))
}

func parseSearchKey(s string) (searchKey, error) {
	bad := fmt.Errorf("%w: malformed page token", ErrBadQuery)
	if len(s) > 64 {
		return searchKey{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 1 || b[0] != 1 {
		return searchKey{}, bad
	}
	ts, n := binary.Varint(b[1:])
	if n <= 0 {
		return searchKey{}, bad
	}
	rid, m := binary.Varint(b[1+n:])
	if m <= 0 || 1+n+m != len(b) {
		return searchKey{}, bad
	}
	return searchKey{ts, rid}, nil
}

// search returns up to limit messages of the room matching every term,
// newest first, below key when set, from sender when set; and whether more
// may follow. In a room of one partition, row ids are in offset order,
// which is time order: the index then yields the newest matches first and
// the search stops at limit; otherwise every match is sorted by time.
func (s *Store) search(ctx context.Context, tag int64, partitions int, terms []term, sender string, below *searchKey, limit int) ([]row, bool, error) {
	q := `SELECT m.rid, m.ts, m.id, m.sender_id, m.sender_name, m.text, m.client_ts
		FROM messages_text f JOIN messages m ON m.rid = f.rowid
		WHERE messages_text MATCH ? AND f.rowid >= ? AND f.rowid < ?`
	args := []any{matchExpr(terms), rowID(tag, 0, 0), rowID(tag+1, 0, 0)}
	if partitions == 1 && below != nil {
		args[2] = below.rid
	}
	if sender != "" {
		q += ` AND m.sender_id = ?`
		args = append(args, sender)
	}
	if partitions == 1 {
		q += ` ORDER BY f.rowid DESC LIMIT ?`
	} else {
		if below != nil {
			q += ` AND (m.ts < ? OR m.ts = ? AND m.rid < ?)`
			args = append(args, below.ts, below.ts, below.rid)
		}
		q += ` ORDER BY m.ts DESC, m.rid DESC LIMIT ?`
	}
	args = append(args, limit+1)
	rs, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("history: search: %w", err)
	}
	rows, err := scanRows(rs)
	if err != nil {
		return nil, false, fmt.Errorf("history: search: %w", err)
	}
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	return rows, more, nil
}

// cursorOf is a cursor with the given next offsets.
func cursorOf(next map[int]int64) cursor.Cursor {
	var c cursor.Cursor
	for p, n := range next {
		c.Advance(p, n-1)
	}
	return c
}
