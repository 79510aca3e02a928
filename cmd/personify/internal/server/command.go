package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/internal/demo"
	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
	"github.com/personify-go/personify/cmd/personify/internal/link"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/pgstore"
)

// Options are the serve command's flags.
type Options struct {
	Addr            string
	Dir             string
	Postgres        string
	Demo            bool
	KeyFile         string
	Tokens          string
	TLSCert         string
	TLSKey          string
	MaxBody         int64
	MaxBatch        int
	DoNotSell       []string
	K               int
	ShutdownTimeout time.Duration
	LogLevel        string
}

// Command returns the serve command.
func Command() *cobra.Command {
	o := Options{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve lookups, the privacy rights and the preference center",
		Long: `serve runs the personify sidecar over a durable data directory (--dir), a
fleet on PostgreSQL (--postgres), or, with --demo, the quickstart's sample in
memory. It serves personify.v1.LookupService, PrivacyService and AdminService
as gRPC, gRPC-Web and JSON over HTTP (POST /personify.v1.LookupService/Segments
with a JSON body), the preference center at /privacy/, /healthz, /readyz
(ready once the directory or fleet is caught up) and /metrics (Prometheus).

Every API call needs a bearer token of its service's role: lookup, privacy or
admin, from --tokens (lines "ROLE TOKEN", mode 600) or PERSONIFY_LOOKUP_TOKEN,
PERSONIFY_PRIVACY_TOKEN and PERSONIFY_ADMIN_TOKEN. A lookup token cannot
explain or erase. The engine key comes from --key-file (personify keygen) or
PERSONIFY_KEY. On SIGTERM or SIGINT the server stops taking requests, finishes
those under way, and closes the engine: every acknowledged write is durable.

The server prints "listening on ADDR" once it accepts connections; logs go to
stderr as JSON, with pseudonyms only, never an identifier, a key or a token.`,
		Example: `  personify serve --demo
  personify keygen /etc/personify/key
  personify serve --dir /var/lib/personify --key-file /etc/personify/key --tokens /etc/personify/tokens --addr :8080
  curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"subject":{"identifier":{"kind":"KIND_EMAIL","value":"member000042@example.com"}},"purpose":"personalization"}' \
    http://localhost:8080/personify.v1.LookupService/Segments`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return Run(ctx, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Addr, "addr", "localhost:8080", "address to listen on (host:port; port 0 picks a free one)")
	f.StringVar(&o.Dir, "dir", "", "durable data directory (created if missing)")
	f.StringVar(&o.Postgres, "postgres", "", "PostgreSQL connection string of a fleet (see pgstore)")
	f.BoolVar(&o.Demo, "demo", false, "load the quickstart's sample (in memory without --dir) with a public demo key")
	f.StringVar(&o.KeyFile, "key-file", "", "engine key file (personify keygen); PERSONIFY_KEY if not given")
	f.StringVar(&o.Tokens, "tokens", "", `file of bearer tokens, lines "ROLE TOKEN" (lookup, privacy, admin), mode 600`)
	f.StringVar(&o.TLSCert, "tls-cert", "", "TLS certificate file (PEM); serves HTTPS with --tls-key")
	f.StringVar(&o.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.Int64Var(&o.MaxBody, "max-body", DefaultMaxBody, "largest request body, and stream message, in bytes")
	f.IntVar(&o.MaxBatch, "max-batch", DefaultMaxBatch, "most entries in one batch call")
	f.StringSliceVar(&o.DoNotSell, "do-not-sell", nil, `purposes "Do not sell or share" and Global Privacy Control suppress (demo: advertising)`)
	f.IntVar(&o.K, "k", 0, "minimum segment and audience size served (k-anonymity; 0: the library's default, 50)")
	f.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to wait for requests under way on SIGTERM")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.Dir != "" && o.Postgres != "" {
		return errors.New("give --dir or --postgres, not both")
	}
	if o.Postgres != "" && o.Demo {
		return errors.New("--demo runs in memory or over --dir, not over a fleet")
	}
	if o.Dir == "" && o.Postgres == "" && !o.Demo {
		return errors.New("give --dir DIR, --postgres CONN or --demo")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("give both --tls-cert and --tls-key, or neither")
	}
	key, err := engineKey(o)
	if err != nil {
		return err
	}
	tokens := &Tokens{}
	if o.Tokens != "" {
		if err := tokens.LoadTokenFile(o.Tokens); err != nil {
			return err
		}
	}
	if err := tokens.LoadEnv(os.Getenv); err != nil {
		return err
	}
	if tokens.Len() == 0 {
		if !o.Demo {
			return errors.New("no tokens: give --tokens FILE or PERSONIFY_LOOKUP_TOKEN, PERSONIFY_PRIVACY_TOKEN and PERSONIFY_ADMIN_TOKEN")
		}
		path, err := demoTokens(tokens)
		if err != nil {
			return err
		}
		defer os.RemoveAll(filepath.Dir(path)) // live tokens do not outlive the demo
		fmt.Fprintf(stdout, "demo tokens (one per role) are in %s, readable by you only\n", path)
	}
	if o.Demo && len(o.DoNotSell) == 0 {
		o.DoNotSell = []string{demo.DoNotSell}
	}
	links, err := link.New(key, nil)
	if err != nil {
		return err
	}
	cfg := Config{Tokens: tokens, Links: links, MaxBody: o.MaxBody, MaxBatch: o.MaxBatch, DoNotSell: o.DoNotSell,
		Secure: o.TLSCert != "", Logger: log}
	var replica *pgstore.Replica
	if o.Postgres != "" {
		cfg.Applied = func() uint64 {
			if replica == nil {
				return 0
			}
			return replica.Status().Applied
		}
	}
	s, err := New(cfg)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(o.TLSCert == "") // gRPC over plain TCP (h2c), on loopback or behind a proxy
	scheme := "http"
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())

	eng, closeEng, err := openEngine(ctx, o, key, s, &replica, log)
	if err != nil {
		_ = srv.Close()
		return err
	}
	if o.Demo {
		line, err := demo.Load(eng.(demoEngine), eng.(demoEngine).Definitions)
		if err != nil {
			_ = srv.Close()
			closeEng()
			return fmt.Errorf("loading the demo: %w", err)
		}
		fmt.Fprintln(stdout, line)
	}
	if err := s.Serve(eng); err != nil {
		_ = srv.Close()
		closeEng()
		return err
	}
	fmt.Fprintln(stdout, "ready")
	log.Info("personify: ready", "addr", ln.Addr().String(), "key", key.Fingerprint().String())

	select {
	case err := <-served:
		closeEng()
		return err
	case <-ctx.Done():
	}
	s.ShuttingDown()
	log.Info("personify: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx) // stops accepting, waits for the requests under way: their writes are acknowledged or not sent
	if cerr := closeEng(); err == nil {
		err = cerr
	}
	if err == nil {
		fmt.Fprintln(stdout, "stopped")
	}
	return err
}

// demoEngine is what the demo's loader needs.
type demoEngine interface {
	DefinePurpose(p personify.Purpose) error
	Define(s personify.Segment) error
	Add(segment string, ids ...anonymize.Identifier) error
	SetConsent(id anonymize.Identifier, purpose string, granted bool) error
	Definitions() []personify.Segment
}

func engineKey(o Options) (anonymize.Key, error) {
	k, err := keyfile.Load(o.KeyFile)
	if errors.Is(err, keyfile.ErrNoKey) && o.Demo && o.Dir == "" {
		return anonymize.KeyFromHex(demo.KeyHex)
	}
	return k, err
}

// demoTokens makes a token per role for a demo, writes them to a file only
// the user can read, and returns its path: tokens are never printed.
func demoTokens(t *Tokens) (string, error) {
	dir, err := os.MkdirTemp("", "personify-demo-")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, role := range []string{"lookup", "privacy", "admin"} {
		var r [24]byte
		_, _ = rand.Read(r[:])
		tok := hex.EncodeToString(r[:])
		if err := t.Add(tok, roleNames[role]); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %s\n", role, tok)
	}
	path := filepath.Join(dir, "tokens")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// openEngine opens what o names and returns it with its closer.
func openEngine(ctx context.Context, o Options, key anonymize.Key, s *Server, replica **pgstore.Replica, log *slog.Logger) (Engine, func() error, error) {
	opts := personify.Options{Key: key, K: o.K, Audit: log}
	switch {
	case o.Postgres != "":
		r, err := pgstore.Open(ctx, o.Postgres, pgstore.Options{Engine: opts})
		if err != nil {
			return nil, nil, err
		}
		*replica = r
		go followLag(ctx, r, s)
		return r, r.Close, nil
	case o.Dir != "":
		opts.Durable.OnSync = s.ObserveFsync
		e, err := personify.Open(o.Dir, opts)
		if err != nil {
			return nil, nil, err
		}
		return e, e.Close, nil
	}
	e, err := personify.New(opts)
	if err != nil {
		return nil, nil, err
	}
	return e, e.Close, nil
}

// followLag measures, every few seconds, how long the replica takes to
// catch up with the fleet, and marks the server not ready while it is
// stalled or cannot reach the database.
func followLag(ctx context.Context, r *pgstore.Replica, s *Server) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.Sync(sctx)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: a Sync cut short says nothing of the fleet
		}
		s.ObserveLag(time.Since(start))
		switch st := r.Status(); {
		case st.Stalled != nil:
			s.NotReady("the replica stalled: " + st.Stalled.Error())
		case err != nil:
			s.NotReady("cannot catch up with the fleet: " + err.Error())
		default:
			s.Ready()
		}
	}
}
