package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/bench/internal/redisbench"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// BenchmarkSidecarFloor measures what a round trip costs on this host
// before the sidecar does any work, so that BenchmarkSidecar's figures can
// be read against the transport's floor (same run, same host):
//
//   - tcp-echo: a Go server in another process reads 40 bytes and writes
//     20, one round trip per op: the loopback's floor;
//   - redis-SISMEMBER: one SISMEMBER round trip (the target's baseline);
//   - nethttp-h2c-empty/go-client: net/http's HTTP/2 server (what
//     connect-go serves gRPC on) in another process, with a handler that
//     reads the body and writes a 19-byte gRPC message and its trailer,
//     called by Go's HTTP/2 client as BenchmarkSidecar's gRPC client is;
//   - nethttp-h2c-empty/frame-client: the same server called by a client
//     that writes each request's frames in one write and reads the answer
//     on the calling goroutine: the server's cost with the least client.
//
// The servers run in a child process (this test binary, re-executed), as
// redis-server and the sidecar do.
func BenchmarkSidecarFloor(b *testing.B) {
	b.Run("tcp-echo", func(b *testing.B) {
		addr := startFloorServer(b, "echo")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 40)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:20]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redis-SISMEMBER", func(b *testing.B) {
		s, err := redisbench.Start()
		if errors.Is(err, redisbench.ErrNotInstalled) {
			b.Skipf("Redis baseline skipped: %v", err)
		}
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		c, err := redisbench.Dial(s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		key, member := []byte("segment"), []byte("member")
		if _, err := c.SAdd(key, [][]byte{member}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if ok, err := c.SIsMember(key, member); err != nil || !ok {
				b.Fatalf("SISMEMBER = %v, %v", ok, err)
			}
		}
	})
	b.Run("nethttp-h2c-empty/go-client", func(b *testing.B) {
		addr := startFloorServer(b, "nethttp")
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr}
		url := "http://" + addr + "/personify.v1.LookupService/Segments"
		b.ResetTimer()
		for range b.N {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(floorRequest))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			resp, err := cl.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, floorAnswer) || resp.Trailer.Get("Grpc-Status") != "0" {
				b.Fatalf("answer %q, %v, trailer %v", got, err, resp.Trailer)
			}
		}
	})
	b.Run("nethttp-h2c-empty/frame-client", func(b *testing.B) {
		addr := startFloorServer(b, "nethttp")
		c, err := newFrameClient(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.conn.Close()
		b.ResetTimer()
		for range b.N {
			if err := c.call(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var (
	// floorRequest and floorAnswer are gRPC length-prefixed messages the
	// size of a Segments request (a 20-byte identifier) and answer.
	floorRequest = []byte("\x00\x00\x00\x00\x14ada@example.com.....")
	floorAnswer  = []byte("\x00\x00\x00\x00\x0e\x0a\x07runners\x0a\x03vip")
)

// TestSidecarFloorServer is BenchmarkSidecarFloor's child process: with
// PERSONIFY_FLOOR_SERVER set it serves that kind of server on a free port,
// prints its address and serves until killed; otherwise it skips.
func TestSidecarFloorServer(t *testing.T) {
	kind := os.Getenv("PERSONIFY_FLOOR_SERVER")
	if kind == "" {
		t.Skip("the child process of BenchmarkSidecarFloor")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("floor-server", ln.Addr())
	switch kind {
	case "echo":
		for {
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 40)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf[:20]); err != nil {
						return
					}
				}
			}()
		}
	case "nethttp":
		s := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write(floorAnswer)
			w.Header().Set("Grpc-Status", "0")
		})}
		s.Protocols.SetUnencryptedHTTP2(true)
		t.Fatal(s.Serve(ln))
	default:
		t.Fatalf("unknown floor server %q", kind)
	}
}

// startFloorServer re-executes the test binary as a floor server of kind
// and returns its address; the child is killed when b ends.
func startFloorServer(b *testing.B, kind string) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSidecarFloorServer$", "-test.v")
	cmd.Env = append(os.Environ(), "PERSONIFY_FLOOR_SERVER="+kind)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "floor-server "); ok {
				addr <- a
				break
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(time.Minute):
		b.Fatalf("the %s floor server did not start", kind)
		return ""
	}
}

// frameClient speaks HTTP/2 frames directly: each call writes its HEADERS
// and DATA in one write and reads the answer on the calling goroutine.
type frameClient struct {
	conn   net.Conn
	bw     *bufio.Writer
	fr     *http2.Framer
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
	addr   string
	stream uint32
}

func newFrameClient(addr string) (*frameClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &frameClient{conn: conn, bw: bufio.NewWriter(conn), addr: addr, stream: 1}
	c.fr = http2.NewFramer(c.bw, bufio.NewReader(conn))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.bw.WriteString(http2.ClientPreface)
	if err := c.fr.WriteSettings(); err != nil {
		return nil, err
	}
	return c, c.bw.Flush()
}

func (c *frameClient) call() error {
	c.hbuf.Reset()
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: c.addr}, {Name: ":path", Value: "/personify.v1.LookupService/Segments"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		c.enc.WriteField(f)
	}
	id := c.stream
	c.stream += 2
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	if err := c.fr.WriteData(id, true, floorRequest); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	var got []byte
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := c.fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := c.fr.WritePing(true, f.Data); err != nil {
					return err
				}
			}
		case *http2.DataFrame:
			if f.StreamID != id {
				continue
			}
			got = append(got, f.Data()...)
			if n := uint32(len(f.Data())); n > 0 {
				c.fr.WriteWindowUpdate(0, n)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id && f.StreamEnded() {
				if !bytes.Equal(got, floorAnswer) {
					return fmt.Errorf("answer %q, want %q", got, floorAnswer)
				}
				return c.bw.Flush() // the window updates, if any
			}
		case *http2.RSTStreamFrame:
			return fmt.Errorf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			return fmt.Errorf("goaway: %v", f.ErrCode)
		}
	}
}
