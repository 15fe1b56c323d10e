// Package wstest is a small blocking WebSocket client for Parley's tests. It
// speaks RFC 6455 over a plain net.Conn with the shared codec, and can also
// send raw bytes and frames that break the protocol, to test how the server
// answers bad clients. It costs a goroutine per connection only in the
// caller: big tests use the load generator's non-blocking client instead.
package wstest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/wsproto"
)

// ErrBadHandshake is returned by Dial when the server does not answer 101;
// the response is returned with it.
var ErrBadHandshake = errors.New("wstest: handshake refused")

// CloseError is returned by ReadMessage when a close frame arrives.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wstest: closed with %d %q", e.Code, e.Reason)
}

// Conn is a client connection.
type Conn struct {
	nc net.Conn
	br *bufio.Reader
	// AutoPong answers pings inside ReadMessage (default true).
	AutoPong bool
}

// Dial opens a WebSocket to rawURL ("ws://host:port/path") with extra
// request headers. On a refused handshake it returns the response (its body
// still readable) and ErrBadHandshake.
func Dial(ctx context.Context, rawURL string, hdr http.Header) (*Conn, *http.Response, error) {
	return DialWith(ctx, &net.Dialer{}, rawURL, hdr)
}

// DialWith is Dial through d, for socket options set before connecting.
func DialWith(ctx context.Context, d *net.Dialer, rawURL string, hdr http.Header) (*Conn, *http.Response, error) {
	return dial(ctx, d, nil, rawURL, hdr)
}

// DialTLS opens a wss:// WebSocket with the TLS configuration cfg.
func DialTLS(ctx context.Context, cfg *tls.Config, rawURL string, hdr http.Header) (*Conn, *http.Response, error) {
	return dial(ctx, &net.Dialer{}, cfg, rawURL, hdr)
}

func dial(ctx context.Context, d *net.Dialer, tlsCfg *tls.Config, rawURL string, hdr http.Header) (*Conn, *http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("wstest: parse %q: %w", rawURL, err)
	}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, fmt.Errorf("wstest: dial %s: %w", u.Host, err)
	}
	if tlsCfg != nil {
		if tlsCfg.ServerName == "" {
			tlsCfg = tlsCfg.Clone()
			tlsCfg.ServerName = u.Hostname()
		}
		tc := tls.Client(nc, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("wstest: TLS handshake with %s: %w", u.Host, err)
		}
		nc = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	var b strings.Builder
	host := u.Host // hdr's Host, if any, replaces it: the server sees the name a browser would send
	if v := hdr.Get("Host"); v != "" {
		host = v
	}
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), host)
	h := http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-WebSocket-Key":     {key},
		"Sec-WebSocket-Version": {"13"},
	}
	for k, vs := range hdr {
		if http.CanonicalHeaderKey(k) != "Host" {
			h[http.CanonicalHeaderKey(k)] = vs
		}
	}
	for k, vs := range h {
		for _, v := range vs {
			if v != "" {
				fmt.Fprintf(&b, "%s: %s\r\n", k, v)
			}
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("wstest: write handshake: %w", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("wstest: read handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		nc.Close()
		return nil, resp, fmt.Errorf("%w: %s: %s", ErrBadHandshake, resp.Status, body)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), wsproto.AcceptKey(key); got != want {
		nc.Close()
		return nil, resp, fmt.Errorf("wstest: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	_ = nc.SetDeadline(time.Time{})
	return &Conn{nc: nc, br: br, AutoPong: true}, resp, nil
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetDeadline sets the read and write deadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Close closes the TCP connection without a close frame.
func (c *Conn) Close() error { return c.nc.Close() }

func maskKey() [4]byte {
	var k [4]byte
	_, _ = rand.Read(k[:])
	return k
}

// WriteFrame writes one masked frame.
func (c *Conn) WriteFrame(op wsproto.Opcode, fin bool, payload []byte) error {
	_, err := c.nc.Write(wsproto.AppendMaskedFrame(nil, op, fin, payload, maskKey()))
	return err
}

// WriteRaw writes b as it is.
func (c *Conn) WriteRaw(b []byte) error {
	_, err := c.nc.Write(b)
	return err
}

// WriteText writes one text message.
func (c *Conn) WriteText(s string) error { return c.WriteFrame(wsproto.OpText, true, []byte(s)) }

// WriteClose writes a close frame with code and reason.
func (c *Conn) WriteClose(code int, reason string) error {
	return c.WriteFrame(wsproto.OpClose, true, wsproto.AppendClosePayload(nil, uint16(code), reason))
}

// ReadFrame reads one frame.
func (c *Conn) ReadFrame() (wsproto.Header, []byte, error) {
	var hb [wsproto.MaxHeaderLen]byte
	if _, err := io.ReadFull(c.br, hb[:2]); err != nil {
		return wsproto.Header{}, nil, err
	}
	n := wsproto.HeaderLen(0, hb[1]&0x80 != 0)
	switch hb[1] & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if _, err := io.ReadFull(c.br, hb[2:n]); err != nil {
		return wsproto.Header{}, nil, err
	}
	h, _, err := wsproto.ParseHeader(hb[:n])
	if err != nil {
		return h, nil, err
	}
	if h.Len > 64<<20 {
		return h, nil, fmt.Errorf("wstest: frame of %d bytes", h.Len)
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		wsproto.Mask(p, h.Key, 0)
	}
	return h, p, nil
}

// ReadMessage reads the next data message, reassembling fragments and
// answering pings when AutoPong is set. A close frame is returned as a
// *CloseError.
func (c *Conn) ReadMessage() (wsproto.Opcode, []byte, error) {
	var op wsproto.Opcode
	var msg []byte
	for {
		h, p, err := c.ReadFrame()
		if err != nil {
			return 0, nil, err
		}
		switch h.Op {
		case wsproto.OpPing:
			if c.AutoPong {
				if err := c.WriteFrame(wsproto.OpPong, true, p); err != nil {
					return 0, nil, err
				}
			}
			continue
		case wsproto.OpPong:
			continue
		case wsproto.OpClose:
			code, reason, err := wsproto.ParseClosePayload(p)
			if err != nil {
				return 0, nil, fmt.Errorf("wstest: bad close frame %x: %w", p, err)
			}
			return 0, nil, &CloseError{Code: int(code), Reason: reason}
		case wsproto.OpContinuation:
			msg = append(msg, p...)
		default:
			op, msg = h.Op, p
		}
		if h.Fin {
			return op, msg, nil
		}
	}
}

// ReadText reads the next data message and returns it as a string.
func (c *Conn) ReadText() (string, error) {
	_, p, err := c.ReadMessage()
	return string(p), err
}

// ExpectClose reads until a close frame arrives and returns it, or the
// error that came first.
func (c *Conn) ExpectClose() (*CloseError, error) {
	for {
		_, _, err := c.ReadMessage()
		var ce *CloseError
		if errors.As(err, &ce) {
			return ce, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// SmallReceiveBuffer returns a dialer whose sockets get an n-byte receive
// buffer before they connect, so the window they advertise stays small: a
// peer that stops reading then backs up its server quickly.
func SmallReceiveBuffer(n int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		})
		return errors.Join(err, serr)
	}}
}
