package bench

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/bench/internal/redisbench"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/cmd/personify/gen/personify/v1/personifyv1connect"
	"github.com/personify-go/personify/internal/sample"
	"github.com/personify-go/personify/personify"
)

// The sidecar benchmarks run the real `personify serve --demo` as a
// separate process on loopback, and a redis-server loaded with the same
// sample's segments as sets of 8-byte pseudonyms, and probe both with the
// same people.

// demoKeyHex is the demo's public engine key (cmd/personify/internal/demo's
// KeyHex, which this module cannot import): the sidecar's pseudonyms are
// computed with it.
const demoKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// sidecarPurpose is the purpose every Segments call asks for.
const sidecarPurpose = "personalization"

// sidecarProbes is how many sample people the benchmarks cycle through (a
// power of two).
const (
	sidecarProbes    = 1 << 12
	sidecarProbeMask = sidecarProbes - 1
)

// sidecarPeople are the probes, the sample's people that every sidecar and
// Redis benchmark asks about, and the sample's membership, computed
// in-process with the demo key.
type sidecarPeople struct {
	pseudonyms []anonymize.Pseudonym // probe i's pseudonym
	subjects   []*pb.Subject         // probe i as an API subject
	jsonBodies [][]byte              // probe i's Segments request as JSON
	segments   []string              // the personalization segments of the sample
	members    map[string][]anonymize.Pseudonym
	withheld   map[string]bool // segments too small to be served (k, MinSize)
}

// recorder is a sample.Engine that keeps the memberships sample.Load adds.
type recorder struct {
	adds map[string][]anonymize.Identifier
}

func (r *recorder) DefinePurpose(personify.Purpose) error { return nil }
func (r *recorder) Define(personify.Segment) error        { return nil }
func (r *recorder) SetConsent(anonymize.Identifier, string, bool) error {
	return nil
}
func (r *recorder) Add(segment string, ids ...anonymize.Identifier) error {
	r.adds[segment] = append(r.adds[segment], ids...)
	return nil
}

func newSidecarPeople() (*sidecarPeople, error) {
	key, err := anonymize.KeyFromHex(demoKeyHex)
	if err != nil {
		return nil, err
	}
	e, err := personify.New(personify.Options{Key: key})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	pe := &sidecarPeople{members: map[string][]anonymize.Pseudonym{}, withheld: map[string]bool{}}
	rec := &recorder{adds: map[string][]anonymize.Identifier{}}
	if _, err := sample.Load(rec); err != nil {
		return nil, err
	}
	for _, s := range sample.Segments {
		ids := rec.adds[s.Name]
		ps := make([]anonymize.Pseudonym, len(ids))
		for i, id := range ids {
			if ps[i], err = e.Pseudonym(id); err != nil {
				return nil, err
			}
		}
		pe.members[s.Name] = ps
		if s.Purpose != sidecarPurpose {
			continue
		}
		pe.segments = append(pe.segments, s.Name)
		// The library's default k is 50; a segment's MinSize raises it.
		if len(ps) < max(50, s.MinSize) {
			pe.withheld[s.Name] = true
		}
	}
	rng := rand.New(rand.NewPCG(0x5eed, 0x51deca))
	for range sidecarProbes {
		id := anonymize.Email(fmt.Sprintf("member%06d@example.com", rng.IntN(sample.People)))
		p, err := e.Pseudonym(id)
		if err != nil {
			return nil, err
		}
		pe.pseudonyms = append(pe.pseudonyms, p)
		pe.subjects = append(pe.subjects, &pb.Subject{Who: &pb.Subject_Pseudonym{Pseudonym: p.String()}})
		pe.jsonBodies = append(pe.jsonBodies, segmentsJSON(p))
	}
	return pe, nil
}

func segmentsJSON(p anonymize.Pseudonym) []byte {
	return fmt.Appendf(nil, `{"subject":{"pseudonym":%q},"purpose":%q}`, p.String(), sidecarPurpose)
}

// batchSegmentsJSON is a BatchSegments request for ps as JSON.
func batchSegmentsJSON(ps []anonymize.Pseudonym) []byte {
	var b bytes.Buffer
	b.WriteString(`{"subjects":[`)
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"pseudonym":%q}`, p.String())
	}
	fmt.Fprintf(&b, `],"purpose":%q}`, sidecarPurpose)
	return b.Bytes()
}

// expected returns the segments probe i is in that the sidecar serves for
// the purpose, in the sample's order.
func (pe *sidecarPeople) expected(p anonymize.Pseudonym) []string {
	var out []string
	for _, s := range pe.segments {
		if !pe.withheld[s] && slices.Contains(pe.members[s], p) {
			out = append(out, s)
		}
	}
	return out
}

// sidecarProc is a running `personify serve --demo` and its clients.
type sidecarProc struct {
	dir    string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	stderr bytes.Buffer

	base  string // http://127.0.0.1:PORT
	token string

	h2c  *http.Transport // gRPC's, HTTP/2 without TLS
	h1   *http.Transport // JSON's, HTTP/1.1 keep-alive
	grpc personifyv1connect.LookupServiceClient
	json *http.Client
}

// startSidecar builds the personify command (from the repository root,
// the bench module's parent) and runs `personify serve --demo` on a free
// loopback port until it prints "ready".
func startSidecar() (_ *sidecarProc, err error) {
	dir, err := os.MkdirTemp("", "personify-sidecar-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	bin := filepath.Join(dir, "personify")
	build := exec.Command("go", "build", "-o", bin, "./cmd/personify")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: building the personify command: %w\n%s", err, out)
	}
	var tok [24]byte
	_, _ = crand.Read(tok[:])
	s := &sidecarProc{dir: dir, token: hex.EncodeToString(tok[:]), done: make(chan error, 1)}
	// exec.Command, not CommandContext: a command stopped through its
	// context reports the context's error even when it exits cleanly.
	s.cmd = exec.Command(bin, "serve", "--demo", "--addr", "127.0.0.1:0")
	cancel := func() {}
	s.cancel = func() {
		if s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	// The lookup token from the environment: no demo token file then.
	s.cmd.Env = append(os.Environ(), "PERSONIFY_KEY=", "PERSONIFY_LOOKUP_TOKEN="+s.token,
		"PERSONIFY_PRIVACY_TOKEN=", "PERSONIFY_ADMIN_TOKEN=")
	s.cmd.Stderr = &lockedBuffer{mu: &s.mu, b: &s.stderr}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var addr string
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				addr = a
			}
			if line == "ready" {
				ready <- addr
			}
		}
		_, _ = io.Copy(io.Discard, out)
		s.done <- s.cmd.Wait()
	}()
	select {
	case s.base = <-ready:
	case err := <-s.done:
		cancel()
		return nil, fmt.Errorf("bench: the sidecar exited before it was ready (%v):\n%s", err, s.errs())
	case <-time.After(2 * time.Minute):
		s.kill()
		return nil, fmt.Errorf("bench: the sidecar was not ready within 2 minutes:\n%s", s.errs())
	}
	if !strings.HasPrefix(s.base, "http://") {
		s.kill()
		return nil, fmt.Errorf("bench: the sidecar listens on %q, want http://", s.base)
	}
	s.h2c = &http.Transport{Protocols: new(http.Protocols)}
	s.h2c.Protocols.SetUnencryptedHTTP2(true)
	s.grpc = personifyv1connect.NewLookupServiceClient(&http.Client{Transport: s.h2c}, s.base, connect.WithGRPC())
	s.h1 = &http.Transport{MaxIdleConnsPerHost: 4}
	s.json = &http.Client{Transport: s.h1}
	return s, nil
}

// errs returns the tail of the sidecar's log.
func (s *sidecarProc) errs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.stderr.Bytes()
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

func (s *sidecarProc) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cancel()
}

// Close stops the sidecar with SIGTERM and waits for it.
func (s *sidecarProc) Close() error {
	s.h2c.CloseIdleConnections()
	s.h1.CloseIdleConnections()
	s.cancel() // SIGTERM
	var err error
	select {
	case err = <-s.done:
		// Wait reports the context's cancellation even after a clean exit.
		if errors.Is(err, context.Canceled) && s.cmd.ProcessState.Success() {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("bench: the sidecar's exit after SIGTERM: %w\n%s", err, s.errs())
		}
	case <-time.After(time.Minute):
		err = errors.New("bench: the sidecar did not stop within a minute of SIGTERM")
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// segments asks the sidecar for p's segments over gRPC.
func (s *sidecarProc) segments(ctx context.Context, sub *pb.Subject) ([]string, error) {
	req := connect.NewRequest(&pb.SegmentsRequest{Subject: sub, Purpose: sidecarPurpose})
	req.Header().Set("Authorization", "Bearer "+s.token)
	resp, err := s.grpc.Segments(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetSegments(), nil
}

// post sends body to a LookupService method as JSON over HTTP/1.1 and
// reads the answer fully into buf, which it returns.
func (s *sidecarProc) post(ctx context.Context, method string, body []byte, buf []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/personify.v1.LookupService/"+method, bytes.NewReader(body))
	if err != nil {
		return buf, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.json.Do(req)
	if err != nil {
		return buf, err
	}
	defer resp.Body.Close()
	b := bytes.NewBuffer(buf[:0])
	_, err = b.ReadFrom(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("bench: %s answered %s: %s", method, resp.Status, b.Bytes())
	}
	return b.Bytes(), err
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the tail of a chatty log only
		l.b.Reset()
	}
	return l.b.Write(p)
}

// sidecarRedis is a redis-server loaded with the sample's segments, each a
// set of 8-byte big-endian pseudonyms, as the Redis baseline stores them.
type sidecarRedis struct {
	srv            *redisbench.Server
	conn           *redisbench.Conn
	keys, memberBs [][]byte // probe i: its segment's key and its pseudonym
}

func startSidecarRedis(pe *sidecarPeople) (*sidecarRedis, error) {
	srv, err := redisbench.Start()
	if err != nil {
		return nil, err
	}
	c, err := redisbench.Dial(srv.Addr())
	if err != nil {
		return nil, errors.Join(err, srv.Close())
	}
	r := &sidecarRedis{srv: srv, conn: c}
	const batch = 1000
	members := make([][]byte, 0, batch)
	for _, s := range sample.Segments {
		ps := pe.members[s.Name]
		for start := 0; start < len(ps); start += batch {
			members = members[:0]
			for _, p := range ps[start:min(start+batch, len(ps))] {
				members = append(members, binary.BigEndian.AppendUint64(nil, uint64(p)))
			}
			if _, err := c.SAdd([]byte(s.Name), members); err != nil {
				return nil, errors.Join(fmt.Errorf("bench: loading redis: %w", err), r.Close())
			}
		}
	}
	names := make([][]byte, len(pe.segments))
	for i, n := range pe.segments {
		names[i] = []byte(n)
	}
	for i, p := range pe.pseudonyms {
		r.keys = append(r.keys, names[i%len(names)])
		r.memberBs = append(r.memberBs, binary.BigEndian.AppendUint64(nil, uint64(p)))
	}
	return r, nil
}

func (r *sidecarRedis) Close() error {
	return errors.Join(r.conn.Close(), r.srv.Close())
}

// check compares, for the first probes, the sidecar's answers over gRPC
// and JSON with the sample's membership and with Redis's: the benchmarks
// ask the same questions of both.
func checkSidecar(pe *sidecarPeople, s *sidecarProc, r *sidecarRedis) error {
	ctx := context.Background()
	nonEmpty := 0
	var buf []byte
	for i := range 32 {
		p := pe.pseudonyms[i]
		got, err := s.segments(ctx, pe.subjects[i])
		if err != nil {
			return fmt.Errorf("bench: Segments over gRPC: %w", err)
		}
		want := pe.expected(p)
		if !slices.Equal(got, want) {
			return fmt.Errorf("bench: the sidecar says %s is in %q for %s, the sample says %q", p, got, sidecarPurpose, want)
		}
		if len(got) > 0 {
			nonEmpty++
		}
		if buf, err = s.post(ctx, "Segments", pe.jsonBodies[i], buf); err != nil {
			return err
		}
		for _, seg := range want {
			if !bytes.Contains(buf, []byte(`"`+seg+`"`)) {
				return fmt.Errorf("bench: the sidecar's JSON answer for %s lacks %s: %s", p, seg, buf)
			}
		}
		if r == nil {
			continue
		}
		for _, seg := range pe.segments {
			in, err := r.conn.SIsMember([]byte(seg), binary.BigEndian.AppendUint64(nil, uint64(p)))
			if err != nil {
				return err
			}
			if in != slices.Contains(pe.members[seg], p) {
				return fmt.Errorf("bench: redis says %s in %s is %v", p, seg, in)
			}
		}
	}
	if nonEmpty == 0 {
		return errors.New("bench: the sidecar put none of the probes in a segment")
	}
	return nil
}
