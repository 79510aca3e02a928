package redisbench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// maxBulk bounds a bulk reply. Only INFO memory (about 2 KiB) is read as
// bulk, so a larger length means a confused stream, not a big answer.
const maxBulk = 1 << 20

var errClosed = errors.New("redisbench: connection closed")

// fail records err as the Conn's sticky error, unless one is already set,
// and returns err.
func (c *Conn) fail(err error) error {
	if c.err == nil {
		c.err = err
	}
	return err
}

// flush sends everything buffered.
func (c *Conn) flush() error {
	if err := c.w.Flush(); err != nil {
		return c.fail(fmt.Errorf("redisbench: write: %w", err))
	}
	return nil
}

// writeLen writes a RESP length header such as "*3\r\n" or "$9\r\n".
// Write errors stick in the bufio.Writer and surface at flush.
func (c *Conn) writeLen(prefix byte, n int) {
	c.w.WriteByte(prefix)
	c.w.Write(strconv.AppendInt(c.num[:0], int64(n), 10))
	c.w.WriteString("\r\n")
}

// writeBulk writes b as a RESP bulk string.
func (c *Conn) writeBulk(b []byte) {
	c.writeLen('$', len(b))
	c.w.Write(b)
	c.w.WriteString("\r\n")
}

// readLine reads one reply line and returns what follows its type byte,
// without the CRLF. The slice aliases the read buffer: it is valid only until
// the next read. An error reply ("-ERR ...") becomes an error that leaves the
// stream in sync; any other type than kind breaks the Conn.
func (c *Conn) readLine(cmd string, kind byte) ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, c.fail(fmt.Errorf("redisbench: %s: reply line longer than the %d-byte buffer", cmd, c.r.Size()))
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, c.fail(fmt.Errorf("redisbench: %s: reading reply: %w", cmd, err))
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, c.fail(fmt.Errorf("redisbench: %s: malformed reply %q", cmd, truncate(line)))
	}
	payload := line[1 : len(line)-2]
	switch line[0] {
	case kind:
		return payload, nil
	case '-':
		return nil, fmt.Errorf("redisbench: %s: %s", cmd, payload)
	}
	return nil, c.fail(fmt.Errorf("redisbench: %s: unexpected reply %q", cmd, truncate(line)))
}

// readInt reads an integer reply.
func (c *Conn) readInt(cmd string) (int64, error) {
	p, err := c.readLine(cmd, ':')
	if err != nil {
		return 0, err
	}
	n, ok := parseInt(p)
	if !ok {
		return 0, c.fail(fmt.Errorf("redisbench: %s: malformed integer reply %q", cmd, truncate(p)))
	}
	return n, nil
}

// readBool reads an integer reply that must be 0 or 1.
func (c *Conn) readBool(cmd string) (bool, error) {
	n, err := c.readInt(cmd)
	if err != nil {
		return false, err
	}
	if n != 0 && n != 1 {
		return false, c.fail(fmt.Errorf("redisbench: %s: integer reply %d, want 0 or 1", cmd, n))
	}
	return n == 1, nil
}

// readBulk reads a bulk-string reply into c.bulk and returns it; the slice
// is valid until the next readBulk.
func (c *Conn) readBulk(cmd string) ([]byte, error) {
	p, err := c.readLine(cmd, '$')
	if err != nil {
		return nil, err
	}
	n, ok := parseInt(p)
	switch {
	case !ok || n < -1:
		return nil, c.fail(fmt.Errorf("redisbench: %s: malformed bulk length %q", cmd, truncate(p)))
	case n == -1:
		return nil, fmt.Errorf("redisbench: %s: nil reply", cmd)
	case n > maxBulk:
		return nil, c.fail(fmt.Errorf("redisbench: %s: bulk reply of %d bytes, over the %d-byte limit", cmd, n, maxBulk))
	}
	size := int(n) + 2 // the body and its CRLF
	if cap(c.bulk) < size {
		c.bulk = make([]byte, size)
	}
	b := c.bulk[:size]
	if _, err := io.ReadFull(c.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, c.fail(fmt.Errorf("redisbench: %s: reading bulk reply: %w", cmd, err))
	}
	if b[n] != '\r' || b[n+1] != '\n' {
		return nil, c.fail(fmt.Errorf("redisbench: %s: bulk reply of %d bytes not followed by CRLF", cmd, n))
	}
	return b[:n], nil
}

// parseInt parses a RESP integer: an optional minus sign and 1 to 19 decimal
// digits that fit in an int64. Unlike strconv.ParseInt it takes bytes, so
// it does not allocate.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 { // 19 digits always fit in a uint64
		return 0, false
	}
	var n uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + uint64(ch-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return -int64(n), true // n == 1<<63 wraps to MinInt64, which is right
	case !neg && n <= math.MaxInt64:
		return int64(n), true
	}
	return 0, false
}

// truncate shortens b for quoting in an error message.
func truncate(b []byte) []byte {
	const limit = 64
	if len(b) > limit {
		return b[:limit]
	}
	return b
}
