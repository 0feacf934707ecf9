// Package httpconn sends HTTP/1.1 requests on a kept connection and reads
// each whole answer on the calling goroutine.
//
// net/http's Transport gives every connection a reader and a writer
// goroutine, so each request costs goroutine switches both ways, plus header
// maps and pools; on a machine shared with the peer that CPU is measurable
// (docs/benchmarks.md). A caller with one request at a time on a connection
// (a bench worker, the daemon's socket client) uses a Conn instead. Dialling,
// deadlines, pooling, retries and the errors users see stay the caller's.
package httpconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrTooLong is the error of an answer whose body is over the Conn's limit.
var ErrTooLong = errors.New("the answer is over the limit")

// A Request is one whole HTTP/1.1 request: an *http.Request, or Raw.
type Request interface{ Write(w io.Writer) error }

// Raw is a request already written out, e.g. built by hand; it is sent in one
// write.
type Raw []byte

// Write writes r to w.
func (r Raw) Write(w io.Writer) error {
	_, err := w.Write(r)
	return err
}

// Conn is a kept HTTP/1.1 connection with its buffers. It carries one round
// trip at a time.
type Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	limit  int
	closed bool
}

// New returns a Conn on nc whose answers have bodies of at most limit bytes.
func New(nc net.Conn, limit int) *Conn {
	return &Conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriter(nc), limit: limit}
}

// SetDeadline sets the connection's read and write deadline (see
// net.Conn.SetDeadline).
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Close closes the connection; it may be called more than once.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	return c.nc.Close()
}

// Closed reports whether the connection was closed: by Close, or by a round
// trip after which it cannot carry another request.
func (c *Conn) Closed() bool { return c.closed }

// RoundTrip writes req, flushed as a whole, and reads the answer's head and
// its whole body, appended to dst[:0] (dst may be nil). answered says whether
// any byte of the answer arrived, so a caller knows whether a request that
// failed may have been served. The connection is closed when it cannot carry
// another request: after an error, an answer with Connection: close, or when
// ctx ended during the round trip. If ctx ends first, the connection's
// deadline is moved to the past, which ends the wait, and the error is ctx's.
func (c *Conn) RoundTrip(ctx context.Context, req Request, dst []byte) (resp *http.Response, body []byte, answered bool, err error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	resp, body, answered, err = c.roundTrip(req, dst)
	moved := !stop()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil || moved || resp.Close {
		c.Close()
	}
	return resp, body, answered, err
}

func (c *Conn) roundTrip(req Request, dst []byte) (*http.Response, []byte, bool, error) {
	if err := req.Write(c.bw); err != nil {
		return nil, nil, false, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, nil, false, err
	}
	if _, err := c.br.Peek(1); err != nil {
		return nil, nil, false, err
	}
	hr, _ := req.(*http.Request) // tells ReadResponse e.g. that a HEAD's answer has no body
	resp, err := http.ReadResponse(c.br, hr)
	if err != nil {
		return nil, nil, true, err
	}
	// The body is read to its end, which leaves the connection at the next
	// answer; it is not closed, which would read on past the limit.
	b, err := c.readAll(resp.Body, dst)
	if err != nil {
		return nil, nil, true, err
	}
	return resp, b, true, nil
}

// readAll appends what r holds to dst[:0], reading at most one byte past the
// limit.
func (c *Conn) readAll(r io.Reader, dst []byte) ([]byte, error) {
	b := dst[:0]
	if cap(b) == 0 {
		b = make([]byte, 0, 512)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):min(cap(b), c.limit+1)])
		b = b[:len(b)+n]
		switch {
		case len(b) > c.limit:
			return nil, ErrTooLong
		case err == io.EOF:
			return b, nil
		case err != nil:
			return nil, err
		}
	}
}
