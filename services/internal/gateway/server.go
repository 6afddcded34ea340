// Package gateway is Palaver's WebSocket gateway: it speaks the client
// protocol of docs/protocol.md, authenticates users, stores their sends in
// the room topics through one shared Kafka writer, and fans each room's
// messages out to its local members through one tail per room (package
// roomhub). It also serves the small HTTP API and the web UI.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/gateway/web"
	"palaver.dev/services/internal/historyapi"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Rooms is the room registry the gateway follows; *room.Registry is one.
type Rooms interface {
	// Get and List answer room.ErrNotLoaded until Ready; Get answers
	// room.ErrNotFound for a room not in the registry.
	Get(name string) (room.Info, error)
	List() ([]room.Info, error)
	// Ready is closed once the registry was read to its end at start.
	Ready() <-chan struct{}
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
}

// Deps are the parts a Server is built from.
type Deps struct {
	Cluster  *kafkabus.Cluster
	Rooms    Rooms
	Verifier auth.Verifier
	// DevLogin, when set, serves /v1/dev/login (dev mode only): POST logs
	// in, every other method is its to refuse.
	DevLogin http.Handler
	Metrics  *Metrics     // nil: unregistered metrics
	Logger   *slog.Logger // nil: discard
}

// Server is one gateway: its connections, room hub and producer.
type Server struct {
	cfg      Config
	rooms    Rooms
	verifier auth.Verifier
	src      roomhub.KafkaSource
	hub      *roomhub.Hub
	prod     *producer
	m        *Metrics
	log      *slog.Logger
	handler  http.Handler
	readBufs *sync.Pool // the connections' read buffers (sockReader)

	origins   []string // browser origins allowed besides the gateway's own host
	anyOrigin bool     // dev mode with --allowed-origins=*: no origin check

	draining atomic.Bool
	connMu   sync.Mutex
	conns    map[*conn]struct{}
	connWG   sync.WaitGroup

	bots     *botLimits
	hist     *historyapi.Client // nil without the history service
	presence *presenceHub       // nil when presence is off
}

// New builds a gateway. It dials nothing: the writer and tails connect on
// first use.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.Cluster == nil || deps.Rooms == nil || deps.Verifier == nil {
		return nil, errors.New("gateway: New needs a Kafka cluster, the room registry and a token verifier")
	}
	m := deps.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	meta, err := deps.Cluster.AdminClient() // topic ids, which kafka-go does not expose
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s := &Server{
		cfg: cfg, rooms: deps.Rooms, verifier: deps.Verifier, src: roomhub.KafkaSource{Cluster: deps.Cluster, Meta: meta},
		m: m, log: log, conns: map[*conn]struct{}{}, bots: newBotLimits(cfg.Limits), readBufs: newReadBufs(cfg.ReadBufferBytes),
	}
	s.hub = roomhub.New(s.src, roomhub.Config{
		RingSize:     cfg.RingSize,
		Linger:       cfg.TailLinger,
		StallCheck:   cfg.StallCheck,
		FlushHold:    cfg.FlushHold,
		DedupWindow:  cfg.DedupWindow,
		DedupEntries: cfg.DedupEntries,
		Encode:       encodeDelivery,
		Metrics:      m.hub(),
		Logger:       log,
	})
	if cfg.Presence.Enabled {
		s.presence = newPresenceHub(cfg.Presence.withDefaults(), deps.Cluster, m.presence, log)
	}
	kp := deps.Cluster.Producer(kafkabus.ProducerConfig{RequestTimeout: cfg.SendTimeout})
	s.prod = newProducer(kp, newDedupCache(cfg.DedupWindow, cfg.DedupEntries), s.hub.Recent, cfg.SendTimeout, m)
	s.origins = slices.DeleteFunc(slices.Clone(cfg.AllowedOrigins), func(o string) bool { return o == "*" })
	s.anyOrigin = cfg.Dev && slices.Contains(cfg.AllowedOrigins, "*") // dev mode only; Validate refuses it otherwise

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	mux.HandleFunc("GET /v1/rooms", s.listRooms)
	mux.HandleFunc("POST /v1/rooms/{room}/messages", s.postMessage)
	mux.HandleFunc("GET /v1/rooms/{room}/messages", s.getMessages)
	mux.HandleFunc("GET /v1/rooms/{room}/search", s.search)
	if shards, _ := historyapi.ParseURLs(cfg.HistoryURLs); len(shards) > 0 {
		s.hist = historyapi.NewClient(shards, cfg.HistoryTimeout)
	}
	mux.HandleFunc("GET /v1/rooms/{room}/presence", s.getPresence)
	mux.Handle("GET /", web.Handler())
	s.handler = mux
	if login := deps.DevLogin; login != nil {
		// Every method of the login path reaches the login handler, which
		// answers all but POST with 405 (Allow: POST). The router cannot
		// say so: GET would match the web UI's "GET /" (404), and a
		// pattern of the path for every method conflicts with it.
		s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == devLoginPath {
				login.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	return s, nil
}

// devLoginPath is where Deps.DevLogin is served.
const devLoginPath = "/v1/dev/login"

// Handler serves the WebSocket endpoint, the HTTP API and the web UI.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server for h with the gateway's timeouts:
// requests must arrive briskly, idle keep-alive connections are reaped.
// WebSocket connections leave its accounting once upgraded.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// Run runs the room hub's watchdog until ctx is done, then shuts down
// gracefully within the drain timeout. Stop the HTTP server at the same
// time (runner.Run does): it stops accepting; hijacked WebSocket
// connections are this method's to close.
func (s *Server) Run(ctx context.Context) error {
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		_ = s.hub.Run(hubCtx)
	}()
	go s.watchWrites(hubCtx)
	go s.followRooms(hubCtx)
	if s.presence != nil {
		go s.presence.run(hubCtx)
	}
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	defer cancel()
	err := s.Shutdown(dctx)
	stopHub()
	<-hubDone
	s.src.Meta.Close()
	return err
}

// followRooms applies each change of the room registry to the rooms this
// gateway tails: members of a deleted room are told, and partitions added
// to a room's topic are tailed at once.
func (s *Server) followRooms(ctx context.Context) {
	// Until the registry is loaded every lookup fails, which Sync would
	// take for deleted rooms.
	select {
	case <-ctx.Done():
		return
	case <-s.rooms.Ready():
	}
	for {
		changed := s.rooms.Changed()
		if rooms, err := s.rooms.List(); err == nil {
			for _, in := range rooms {
				s.m.room(in.Name) // every room's series exists before its first event
			}
		}
		s.hub.Sync(ctx, func(name string) (room.Info, bool) {
			info, err := s.rooms.Get(name)
			return info, err == nil
		})
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// watchWrites closes connections whose socket has not taken a batch of
// frames within the write timeout: their client stopped reading. The
// write in progress is interrupted and the close frame follows the last
// whole frame (conn.sendClose).
func (s *Server) watchWrites(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.WriteTimeout/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.connMu.Lock()
			var stuck []*conn
			for c := range s.conns {
				if since := c.writeSince.Load(); since != 0 && now.Sub(time.Unix(0, since)) > s.cfg.WriteTimeout {
					stuck = append(stuck, c)
				}
			}
			s.connMu.Unlock()
			for _, c := range stuck {
				c.closeWith(protocol.CloseSlowConsumer, "slow consumer: reconnect and rejoin with your cursors", reasonSlowConsumer, false)
			}
		}
	}
}

// Shutdown drains the gateway: new connections and sends are refused, the
// sends in flight get their acks (or errors), every connection is closed
// with 1001 going away, and the Kafka writer is flushed and closed. It
// returns when done or when ctx ends (then it closes what is left at once).
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.presence.drain()
	s.connMu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	s.log.Info("gateway: draining", "connections", len(conns))

	for _, c := range conns {
		c.goAway()
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("gateway: drain: %w", ctx.Err())
		for _, c := range conns {
			_ = c.nc.Close()
		}
	}
	if perr := s.presence.shutdown(); perr != nil {
		err = errors.Join(err, fmt.Errorf("gateway: presence: %w", perr))
	}
	if cerr := s.prod.close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("gateway: close the Kafka producer: %w", cerr))
	}
	return err
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return len(s.conns)
}

func (s *Server) addConn(c *conn) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.m.Connections.Inc()
	return true
}

func (s *Server) removeConn(c *conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.m.Connections.Dec()
		s.connWG.Done()
	}
}

// authorize resolves a room for a user: forbidden before not found, so a
// token without the room does not learn whether it exists.
func (s *Server) authorize(id auth.Identity, name string) (room.Info, *protoError) {
	if err := validRoom(name); err != nil {
		return room.Info{}, err
	}
	if !id.MayJoin(name) {
		return room.Info{}, fail(protocol.CodeForbidden, "your token does not allow this room")
	}
	info, err := s.rooms.Get(name)
	if err != nil {
		return room.Info{}, lookupError(err)
	}
	return info, nil
}

// lookupError maps a failed room lookup to the protocol's answer: a gateway
// that has not yet read the registry must not say a room does not exist.
func lookupError(err error) *protoError {
	if errors.Is(err, room.ErrNotLoaded) {
		return fail(protocol.CodeUnavailable, "the gateway is still loading the rooms; retry")
	}
	return fail(protocol.CodeNotFound, "no such room")
}

// verify checks a token for the WebSocket and the HTTP API alike. A token
// past its exp is refused even within the verifier's clock-skew leeway:
// the leeway forgives clocks that disagree on when a token starts, but a
// session would end at once, and both doors must agree.
func (s *Server) verify(ctx context.Context, token string) (auth.Identity, error) {
	id, err := s.verifier.Verify(ctx, token)
	if err == nil && !id.Expires.IsZero() && !time.Now().Before(id.Expires) {
		err = fmt.Errorf("%w: exp has passed", auth.ErrExpired)
	}
	return id, err
}

// authError maps a verifier error to the protocol's answer.
func authError(err error) *protoError {
	switch {
	case errors.Is(err, auth.ErrExpired):
		return fail(protocol.CodeUnauthorized, "the token expired")
	case errors.Is(err, auth.ErrMissingToken):
		return fail(protocol.CodeUnauthorized, "no token: send it in hello or as Authorization: Bearer")
	default:
		return fail(protocol.CodeUnauthorized, "the token is not valid")
	}
}

// botLimits rate-limits HTTP sends per user, like a connection's sends.
type botLimits struct {
	limits protocol.Limits
	mu     sync.Mutex
	m      map[string]*bucket
}

func newBotLimits(l protocol.Limits) *botLimits {
	return &botLimits{limits: l, m: map[string]*bucket{}}
}

func (b *botLimits) allow(userID string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.m[userID]
	if bk == nil {
		if len(b.m) >= 10_000 {
			b.m = map[string]*bucket{} // bounded: forget everyone rather than grow
		}
		nb := newBucket(b.limits.SendsPerSecond, b.limits.SendBurst)
		bk = &nb
		b.m[userID] = bk
	}
	return bk.allow(now)
}
