// Package server is the personify sidecar: the Connect services
// (personify.v1.LookupService, PrivacyService, AdminService, each served as
// gRPC, gRPC-Web and Connect's JSON over HTTP), bearer tokens per role,
// health, readiness and metrics, and the preference center at /privacy/,
// over one engine or fleet replica.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/personify-go/personify/cmd/personify/gen/personify/v1/personifyv1connect"
	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/cmd/personify/internal/prefcenter"
)

// Defaults of Config.
const (
	DefaultMaxBody  = 4 << 20
	DefaultMaxBatch = 1000
)

// Config configures a Server.
type Config struct {
	Tokens *Tokens      // who may call which service (required)
	Links  *link.Signer // signs the preference center's links (required)
	// MaxBody bounds a request's body, and each message of a stream, in
	// bytes (DefaultMaxBody if zero).
	MaxBody int64
	// MaxBatch bounds the entries of a batch call (DefaultMaxBatch if zero).
	MaxBatch int
	// DoNotSell are the purposes that the preference center's "Do not sell
	// or share" and a browser's Global Privacy Control suppress.
	DoNotSell []string
	// Secure says the server is behind TLS (cookies are marked Secure).
	Secure bool
	// Logger receives the server's events: methods, codes and pseudonyms,
	// never an identifier or a token (nil: discard).
	Logger *slog.Logger
	// Applied reports a fleet replica's journal position (nil outside a
	// fleet).
	Applied func() uint64
}

// Server serves the API and the preference center over an engine that
// Serve hands it once it is open; until then the API answers Unavailable
// and /readyz 503, while /healthz and /metrics answer.
type Server struct {
	cfg   Config
	eng   Engine
	m     *metrics
	ew    *connect.ErrorWriter
	api   atomic.Pointer[http.Handler]
	ready atomic.Bool
	why   atomic.Pointer[string] // why not ready
	down  atomic.Bool            // shutting down: never ready again
	stats atomic.Pointer[func() (int, time.Time)]
}

// New returns a Server that is not ready yet.
func New(cfg Config) (*Server, error) {
	if cfg.Tokens == nil || cfg.Links == nil {
		return nil, errors.New("personify: server.Config needs Tokens and Links")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, ew: connect.NewErrorWriter()}
	s.NotReady("opening the engine")
	s.m = newMetrics(func() (int, time.Time) {
		if f := s.stats.Load(); f != nil {
			return (*f)()
		}
		return 0, time.Time{}
	}, func() (uint64, bool) {
		var n uint64
		if cfg.Applied != nil && s.ready.Load() {
			n = cfg.Applied()
		}
		return n, s.ready.Load()
	})
	return s, nil
}

// ObserveFsync records one fsync's latency (DurableOptions.OnSync).
func (s *Server) ObserveFsync(d time.Duration) { s.m.fsync.Observe(d.Seconds()) }

// ObserveLag records how long a catch-up with the fleet's journal took.
func (s *Server) ObserveLag(d time.Duration) { s.m.lag.Set(d.Seconds()) }

// NotReady makes /readyz answer 503 with why (the engine is opening, the
// replica stalled, the server is shutting down).
func (s *Server) NotReady(why string) {
	s.why.Store(&why)
	s.ready.Store(false)
}

// ShuttingDown makes /readyz answer 503 for good.
func (s *Server) ShuttingDown() {
	s.down.Store(true)
	s.NotReady("shutting down")
}

// Ready makes /readyz answer 200 again after NotReady, unless the server
// is shutting down.
func (s *Server) Ready() {
	if s.api.Load() != nil && !s.down.Load() {
		s.ready.Store(true)
	}
}

// Serve starts serving the API over e and marks the server ready.
func (s *Server) Serve(e Engine) error {
	s.eng = e
	pc, err := prefcenter.New(prefcenter.Config{Engine: e, Links: s.cfg.Links, DoNotSell: s.cfg.DoNotSell, Secure: s.cfg.Secure,
		Logger: s.cfg.Logger, OnGPC: s.m.gpc.Inc})
	if err != nil {
		return err
	}
	stats := func() (int, time.Time) { st := e.Stats(); return st.PendingErasures, st.OldestPendingErasure }
	s.stats.Store(&stats)
	opts := []connect.HandlerOption{
		connect.WithCodec(jsonCodec{}), connect.WithCodec(protoCodec{}),
		connect.WithReadMaxBytes(int(s.cfg.MaxBody)),
		// gzip only answers worth it: a flate writer's reset alone cost more
		// than the whole lookup (a Segments answer is a few dozen bytes).
		connect.WithCompressMinBytes(4096),
		connect.WithRecover(func(_ context.Context, spec connect.Spec, _ http.Header, _ any) error {
			s.cfg.Logger.Error("personify: a request panicked", "procedure", spec.Procedure)
			return connect.NewError(connect.CodeInternal, errors.New("internal error"))
		}),
	}
	mux := http.NewServeMux()
	mount := func(path string, h http.Handler, role Role) {
		mux.Handle(path, s.limitBody(false, authorize(s.cfg.Tokens, role, s.m, s.ew, h)))
	}
	path, h := personifyv1connect.NewLookupServiceHandler(lookupService{s}, opts...)
	mount(path, h, RoleLookup)
	path, h = personifyv1connect.NewPrivacyServiceHandler(privacyService{s}, opts...)
	mount(path, h, RolePrivacy)
	path, h = personifyv1connect.NewAdminServiceHandler(adminService{s}, opts...)
	mount(path, h, RoleAdmin)
	mux.Handle(personifyv1connect.AdminServiceLoadProcedure, s.limitBody(true, authorize(s.cfg.Tokens, RoleAdmin, s.m, s.ew, h)))
	mux.Handle("/privacy/", pc)
	var api http.Handler = mux
	s.api.Store(&api)
	s.ready.Store(true)
	return nil
}

// limitBody refuses a body longer than MaxBody before reading it (when its
// length is declared) and cuts it off there otherwise. A client stream
// (AdminService.Load) is bounded per message instead (connect's
// WithReadMaxBytes): its body is the whole stream. Outside gRPC a refused
// size is 413 (Connect's mapping of ResourceExhausted, 429, would tell a
// client to retry what can never succeed).
func (s *Server) limitBody(stream bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		grpc := strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
		if !grpc {
			w = &no429{ResponseWriter: w}
		}
		if !stream {
			if r.ContentLength > s.cfg.MaxBody {
				s.m.refuse("body_too_large")
				writeError(s.ew, w, r, connect.NewError(connect.CodeResourceExhausted,
					fmt.Errorf("the request body is %d bytes, more than the limit of %d", r.ContentLength, s.cfg.MaxBody)))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody+64) // the envelope of gRPC and Connect on top of the message limit
		}
		next.ServeHTTP(w, r)
	})
}

// no429 answers 413 where connect would answer 429 (ResourceExhausted: the
// sidecar has no rate limit, so it only ever means "too large").
type no429 struct{ http.ResponseWriter }

func (w *no429) WriteHeader(code int) {
	if code == http.StatusTooManyRequests {
		code = http.StatusRequestEntityTooLarge
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *no429) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *no429) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rules name the refusal rules of /metrics by the API's code.
var rules = map[connect.Code]string{connect.CodeInvalidArgument: "invalid_argument", connect.CodeNotFound: "not_found",
	connect.CodeAborted: "key_changed", connect.CodeFailedPrecondition: "failed_precondition", connect.CodeUnavailable: "unavailable",
	connect.CodeDeadlineExceeded: "deadline_exceeded", connect.CodeCanceled: "canceled"}

// fail counts and logs a refused call and returns its API error. (Limits
// count themselves, as body_too_large and batch_too_large.)
func (s *Server) fail(method string, err error) error {
	ae := apiError(err)
	var ce *connect.Error
	if !errors.As(ae, &ce) {
		return ae
	}
	rule, ok := rules[ce.Code()]
	switch {
	case ce.Code() == connect.CodeResourceExhausted:
		rule = "body_too_large"
	case errors.Is(err, errBatchTooLarge):
		rule = "batch_too_large"
	case !ok:
		rule = "internal"
	}
	s.m.refuse(rule)
	s.cfg.Logger.Info("personify: request refused", "method", method, "code", ce.Code().String(), "error", ce.Message())
	return ae
}

// Handler returns the server's HTTP handler: /healthz, /readyz, /metrics,
// the API and the preference center.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", *s.why.Load())
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api := s.api.Load()
		if api == nil {
			writeError(s.ew, w, r, connect.NewError(connect.CodeUnavailable, errors.New("not ready: "+*s.why.Load())))
			return
		}
		(*api).ServeHTTP(w, r)
	})
	return securityHeaders(mux)
}

// securityHeaders sets the headers every response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}
