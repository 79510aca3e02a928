package redisbench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"time"
)

const (
	bufSize     = 64 << 10 // per direction; a pipelined batch rarely needs more
	dialTimeout = 5 * time.Second
)

// Pre-encoded command prefixes: RESP arrays of bulk strings.
var (
	cmdSIsMember = []byte("*3\r\n$9\r\nSISMEMBER\r\n")
	cmdSAdd      = []byte("$4\r\nSADD\r\n") // after the array header, which depends on len(members)
	cmdInfoMem   = []byte("*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
	cmdDBSize    = []byte("*1\r\n$6\r\nDBSIZE\r\n")
	cmdFlushAll  = []byte("*1\r\n$8\r\nFLUSHALL\r\n")
	cmdPing      = []byte("*1\r\n$4\r\nPING\r\n")
	usedMemory   = []byte("used_memory:")
)

// A Conn is one RESP2 connection to a Redis server, with just the commands
// the benchmarks need. SIsMember and SIsMemberPipelined allocate nothing
// once the Conn is warm. Calls block without a deadline.
//
// An error reply from the server (such as WRONGTYPE) is returned as an error
// and leaves the Conn usable; a network error or a malformed reply breaks it,
// and every later call returns that first error.
//
// The zero Conn is not usable; get one from Dial. A Conn is not safe for
// concurrent use by multiple goroutines: give each goroutine its own.
type Conn struct {
	nc     net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	num    [20]byte // scratch for encoding lengths without allocating
	bulk   []byte   // reused body of bulk replies (INFO)
	err    error    // sticky: set once the stream can no longer be trusted
	closed bool
}

// Dial connects to the Redis server at addr ("host:port"), waiting at most
// 5 seconds.
func Dial(addr string) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("redisbench: dial: %w", err)
	}
	return newConn(nc), nil
}

func newConn(nc net.Conn) *Conn {
	return &Conn{
		nc: nc,
		r:  bufio.NewReaderSize(nc, bufSize),
		w:  bufio.NewWriterSize(nc, bufSize),
	}
}

// Close closes the connection. Later calls to Close return nil; later
// commands return an error.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	if c.err == nil {
		c.err = errClosed
	}
	if err := c.nc.Close(); err != nil {
		return fmt.Errorf("redisbench: close: %w", err)
	}
	return nil
}

// SIsMember reports whether member is in the set stored at key, with one
// SISMEMBER round trip. A missing key is an empty set.
func (c *Conn) SIsMember(key, member []byte) (bool, error) {
	if c.err != nil {
		return false, c.err
	}
	c.writeSIsMember(key, member)
	if err := c.flush(); err != nil {
		return false, err
	}
	return c.readBool("SISMEMBER")
}

// SIsMemberPipelined sends SISMEMBER keys[i] members[i] for every i in one
// write and stores the answers in out[i]. If some replies are errors, it
// still reads them all, so the Conn stays usable, and returns the first.
// It panics if keys, members and out differ in length.
func (c *Conn) SIsMemberPipelined(keys, members [][]byte, out []bool) error {
	if len(keys) != len(members) || len(keys) != len(out) {
		panic(fmt.Sprintf("redisbench: SIsMemberPipelined: %d keys, %d members and %d results; the lengths must match",
			len(keys), len(members), len(out)))
	}
	if c.err != nil {
		return c.err
	}
	for i := range keys {
		c.writeSIsMember(keys[i], members[i])
	}
	if err := c.flush(); err != nil {
		return err
	}
	var first error
	for i := range out {
		ok, err := c.readBool("SISMEMBER")
		if err != nil {
			if c.err != nil {
				return err // the stream is broken: nothing more to read
			}
			if first == nil {
				first = err
			}
		}
		out[i] = ok
	}
	return first
}

func (c *Conn) writeSIsMember(key, member []byte) {
	c.w.Write(cmdSIsMember)
	c.writeBulk(key)
	c.writeBulk(member)
}

// SAdd adds members to the set stored at key with a single SADD and returns
// how many were not already members. Callers batch about a thousand members
// per call: Redis must hold the whole command in memory. Redis rejects an
// empty members list.
func (c *Conn) SAdd(key []byte, members [][]byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writeLen('*', 2+len(members))
	c.w.Write(cmdSAdd)
	c.writeBulk(key)
	for _, m := range members {
		c.writeBulk(m)
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	n, err := c.readInt("SADD")
	return int(n), err
}

// UsedMemory returns the used_memory field of INFO memory: the bytes Redis
// has allocated, as its allocator counts them.
func (c *Conn) UsedMemory() (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.w.Write(cmdInfoMem)
	if err := c.flush(); err != nil {
		return 0, err
	}
	body, err := c.readBulk("INFO")
	if err != nil {
		return 0, err
	}
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if v, ok := bytes.CutPrefix(line, usedMemory); ok {
			n, ok := parseInt(v)
			if !ok || n < 0 {
				return 0, fmt.Errorf("redisbench: INFO: bad used_memory %q", truncate(v))
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("redisbench: INFO: no used_memory field")
}

// DBSize returns the number of keys in the current database.
func (c *Conn) DBSize() (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.w.Write(cmdDBSize)
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.readInt("DBSIZE")
}

// FlushAll deletes every key on the server.
func (c *Conn) FlushAll() error {
	return c.simple(cmdFlushAll, "FLUSHALL", "OK")
}

// Ping checks that the server answers PONG.
func (c *Conn) Ping() error {
	return c.simple(cmdPing, "PING", "PONG")
}

// simple sends a pre-encoded command and expects the simple-string reply want.
func (c *Conn) simple(cmd []byte, name, want string) error {
	if c.err != nil {
		return c.err
	}
	c.w.Write(cmd)
	if err := c.flush(); err != nil {
		return err
	}
	got, err := c.readLine(name, '+')
	if err != nil {
		return err
	}
	if string(got) != want {
		return c.fail(fmt.Errorf("redisbench: %s: reply %q, want %q", name, truncate(got), want))
	}
	return nil
}

var (
	cmdIncr   = []byte("*2\r\n$4\r\nINCR\r\n")
	cmdExpire = []byte("*3\r\n$6\r\nEXPIRE\r\n")
)

// IncrExpire is the usual server-side frequency counter: INCR key, then
// EXPIRE key seconds (the counter's window), both sent in one write, the
// two replies read; it returns the count after the increment.
func (c *Conn) IncrExpire(key []byte, seconds int) (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writeIncrExpire(key, seconds)
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.readIncrExpire()
}

// IncrExpirePipelined sends IncrExpire for every key in one write and
// stores the counts in out. It panics if keys and out differ in length.
func (c *Conn) IncrExpirePipelined(keys [][]byte, seconds int, out []int64) error {
	if len(keys) != len(out) {
		panic(fmt.Sprintf("redisbench: IncrExpirePipelined: %d keys and %d results", len(keys), len(out)))
	}
	if c.err != nil {
		return c.err
	}
	for _, k := range keys {
		c.writeIncrExpire(k, seconds)
	}
	if err := c.flush(); err != nil {
		return err
	}
	var first error
	for i := range out {
		n, err := c.readIncrExpire()
		if err != nil {
			if c.err != nil {
				return err
			}
			if first == nil {
				first = err
			}
		}
		out[i] = n
	}
	return first
}

func (c *Conn) writeIncrExpire(key []byte, seconds int) {
	c.w.Write(cmdIncr)
	c.writeBulk(key)
	c.w.Write(cmdExpire)
	c.writeBulk(key)
	var num [20]byte // not c.num: writeBulk writes the length there
	c.writeBulk(strconv.AppendInt(num[:0], int64(seconds), 10))
}

func (c *Conn) readIncrExpire() (int64, error) {
	n, err := c.readInt("INCR")
	if _, eerr := c.readInt("EXPIRE"); err == nil {
		err = eerr
	}
	return n, err
}
