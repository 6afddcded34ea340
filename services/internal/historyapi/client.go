package historyapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"palaver.dev/services/internal/shard"
)

// Client queries the history service, sending each room's queries to the
// replicas of the room's shard (shard.Of).
type Client struct {
	shards [][]string // per shard, its replicas' base URLs
	http   *http.Client
	next   atomic.Uint32 // rotates the first replica tried
}

// ParseURLs reads the history replicas: one comma-separated entry per
// shard, in shard order, each entry the base URLs of that shard's replicas
// separated by '|' ("http://history-0.history:8081|http://history-2.history:8081,...").
func ParseURLs(s string) ([][]string, error) {
	var out [][]string
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		var replicas []string
		for _, u := range strings.Split(entry, "|") {
			u = strings.TrimRight(strings.TrimSpace(u), "/")
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return nil, fmt.Errorf("history URL %q: want http(s)://host:port", u)
			}
			replicas = append(replicas, u)
		}
		out = append(out, replicas)
	}
	return out, nil
}

// NewClient returns a client of the given shards (see ParseURLs); timeout
// bounds each request to a replica.
func NewClient(shards [][]string, timeout time.Duration) *Client {
	return &Client{shards: shards, http: &http.Client{Timeout: timeout}}
}

// Shards is the number of shards the client routes over.
func (c *Client) Shards() int { return len(c.shards) }

// Messages asks the room's shard for a page.
func (c *Client) Messages(ctx context.Context, room string, req PageRequest) (Page, error) {
	var page Page
	err := c.get(ctx, room, "messages", req.Values(), &page)
	return page, err
}

// Search asks the room's shard for search results.
func (c *Client) Search(ctx context.Context, room string, req SearchRequest) (SearchPage, error) {
	var page SearchPage
	err := c.get(ctx, room, "search", req.Values(), &page)
	return page, err
}

// get tries the shard's replicas in turn until one answers; a bad request
// is final.
func (c *Client) get(ctx context.Context, room, what string, q url.Values, out any) error {
	replicas := c.shards[shard.Of(room, len(c.shards))]
	first := int(c.next.Add(1))
	var errs []error
	for i := range replicas {
		base := replicas[(first+i)%len(replicas)]
		err := c.getOne(ctx, base+"/v1/rooms/"+url.PathEscape(room)+"/"+what+"?"+q.Encode(), out)
		if err == nil || errors.Is(err, ErrBadRequest) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Client) getOne(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer res.Body.Close()
	body := io.LimitReader(res.Body, 16<<20)
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(body).Decode(out); err != nil {
			return fmt.Errorf("%w: decode the answer of %s: %w", ErrUnavailable, req.URL.Host, err)
		}
		return nil
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = json.NewDecoder(body).Decode(&e)
	kind := ErrUnavailable
	switch e.Code {
	case CodeBadRequest:
		// The client's own fault, told to the client: the replica's reason
		// alone, as ParsePageRequest and ParseSearchRequest word theirs.
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.TrimPrefix(e.Message, ErrBadRequest.Error()+": "))
	case CodeNotFound:
		kind = ErrNotServed
	case CodeBehind:
		kind = ErrBehind
	}
	return fmt.Errorf("%w (%s, %d): %s", kind, req.URL.Host, res.StatusCode, e.Message)
}
