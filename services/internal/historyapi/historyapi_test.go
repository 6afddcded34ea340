package historyapi

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestParseURLs(t *testing.T) {
	got, err := ParseURLs(" http://h-0:8081|http://h-2:8081/ , http://h-1:8081,")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got[0], []string{"http://h-0:8081", "http://h-2:8081"}) || !slices.Equal(got[1], []string{"http://h-1:8081"}) {
		t.Fatalf("ParseURLs = %q", got)
	}
	for _, bad := range []string{"h-0:8081", "ftp://h", "http://", "http://a|"} {
		if _, err := ParseURLs(bad); err == nil {
			t.Errorf("ParseURLs(%q) accepted", bad)
		}
	}
}

func TestParsePageRequest(t *testing.T) {
	for _, bad := range []string{"limit=0", "limit=-1", "limit=201", "limit=x", "before=!!", "after=%00",
		"around=yesterday", "around=", "before=AQA&after=AQA", "seen=" + strings.Repeat("A", 100000)} {
		q, _ := url.ParseQuery(bad)
		if _, err := ParsePageRequest(q); !errors.Is(err, ErrBadRequest) {
			t.Errorf("ParsePageRequest(%s) = %v, want ErrBadRequest", bad, err)
		}
	}
	q, _ := url.ParseQuery("after=&limit=7")
	req, err := ParsePageRequest(q)
	if err != nil || !req.HasAfter || req.Limit != 7 || req.Kind() != "after" {
		t.Fatalf("after=: %+v %v", req, err)
	}
	if again, err := ParsePageRequest(req.Values()); err != nil || again.Kind() != "after" || again.Limit != 7 {
		t.Fatalf("Values round trip: %+v %v", again, err)
	}
}

func TestParseSearchRequest(t *testing.T) {
	for _, bad := range []string{"", "q=", "q=" + strings.Repeat("a", MaxQueryBytes+1), "q=a&sender=" + strings.Repeat("u", MaxSenderBytes+1),
		"q=a&next=" + strings.Repeat("A", 65), "q=a&limit=0"} {
		q, _ := url.ParseQuery(bad)
		if _, err := ParseSearchRequest(q); !errors.Is(err, ErrBadRequest) {
			t.Errorf("ParseSearchRequest(%s) = %v, want ErrBadRequest", bad, err)
		}
	}
}

// FuzzParsePageRequest: any query string is a request or a bad request,
// and a request survives its own encoding.
func FuzzParsePageRequest(f *testing.F) {
	for _, s := range []string{"before=AQEAKg&limit=5", "after=", "around=2026-11-24T12:00:00Z", "seen=AQA", "limit=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		req, err := ParsePageRequest(q)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v is not a bad request", err)
			}
			return
		}
		again, err := ParsePageRequest(req.Values())
		if err != nil || again.Kind() != req.Kind() || again.Limit != req.Limit || again.Before.String() != req.Before.String() {
			t.Fatalf("round trip of %q: %+v, %v", raw, again, err)
		}
	})
}
