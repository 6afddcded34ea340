package chatclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"palaver.dev/services/internal/protocol"
)

// maxBody bounds what the client reads of an HTTP answer.
const maxBody = 8 << 20

// API is the HTTP side of the protocol. The zero HTTPClient means
// http.DefaultClient.
type API struct {
	BaseURL    string // e.g. http://127.0.0.1:8080
	Token      string
	HTTPClient *http.Client
}

// DevLogin asks a dev-mode gateway for a short-lived token for name
// (POST /v1/dev/login). A gateway that is not in dev mode answers not_found.
func DevLogin(ctx context.Context, baseURL, name string) (string, error) {
	a := API{BaseURL: baseURL}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := a.do(ctx, http.MethodPost, "/v1/dev/login", map[string]string{"name": name}, &out); err != nil {
		return "", fmt.Errorf("dev login as %q: %w", name, err)
	}
	if out.Token == "" {
		return "", fmt.Errorf("dev login as %q: the answer has no token", name)
	}
	return out.Token, nil
}

// Rooms lists the rooms the caller may join (GET /v1/rooms).
func (a *API) Rooms(ctx context.Context) ([]Room, error) {
	var out struct {
		Rooms []Room `json:"rooms"`
	}
	if err := a.do(ctx, http.MethodGet, "/v1/rooms", nil, &out); err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	return out.Rooms, nil
}

// Presence returns a page of who is online in room, by user id, after the
// user id after ("" for the first page); Next names the next page's after
// (GET /v1/rooms/{room}/presence).
func (a *API) Presence(ctx context.Context, room, after string, limit int) (Online, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/rooms/" + url.PathEscape(room) + "/presence"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out Online
	if err := a.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return Online{}, fmt.Errorf("presence of %s: %w", room, err)
	}
	return out, nil
}

// History returns up to limit messages stored before the cursor before,
// oldest first (GET /v1/rooms/{room}/messages).
func (a *API) History(ctx context.Context, room, before string, limit int) (Page, error) {
	q := url.Values{}
	if before != "" {
		q.Set("before", before)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/rooms/" + url.PathEscape(room) + "/messages"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out Page
	if err := a.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return Page{}, fmt.Errorf("history of %q: %w", room, err)
	}
	return out, nil
}

// Post stores a message like Send, over HTTP (POST /v1/rooms/{room}/messages).
func (a *API) Post(ctx context.Context, room, id, text string) (Ack, error) {
	var out Ack
	body := map[string]string{"id": id, "text": text}
	if err := a.do(ctx, http.MethodPost, "/v1/rooms/"+url.PathEscape(room)+"/messages", body, &out); err != nil {
		return Ack{}, fmt.Errorf("post to %q: %w", room, err)
	}
	return out, nil
}

func (a *API) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	hc := a.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return httpError(resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// httpError turns an error answer into an *Error. An answer without the
// protocol's body (a proxy, a plain 404) gets the code its status implies.
func httpError(status int, body []byte) *Error {
	var e protocol.HTTPError
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return &Error{Code: e.Code, Message: e.Message, Status: status}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Code: statusCode(status), Message: fmt.Sprintf("HTTP %d: %s", status, msg), Status: status}
}

func statusCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return protocol.CodeBadRequest
	case http.StatusUnauthorized:
		return protocol.CodeUnauthorized
	case http.StatusForbidden:
		return protocol.CodeForbidden
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return protocol.CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return protocol.CodeTooLarge
	case http.StatusTooManyRequests:
		return protocol.CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return protocol.CodeUnavailable
	}
	return protocol.CodeInternal
}
