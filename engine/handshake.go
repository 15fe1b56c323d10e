package engine

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	ltls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/wsproto"
)

// originRefusedBody is the seed's answer to a foreign origin.
const originRefusedBody = "<h1>origin not allowed</h1>"

// refuse answers an upgrade request with status and a short plain-text body.
func refuse(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body + "\n"))
}

// hasToken reports whether a comma-separated header list holds token,
// compared case-insensitively (Firefox sends "Connection: keep-alive, Upgrade").
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// checkUpgrade applies RFC 6455 section 4.2.1 to the request and answers the
// first violation. It reports whether the request may proceed.
func (s *Server) checkUpgrade(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		refuse(w, http.StatusMethodNotAllowed, "405 method not allowed: a WebSocket upgrade must be a GET")
	case !r.ProtoAtLeast(1, 1):
		refuse(w, http.StatusBadRequest, "400 bad request: a WebSocket upgrade needs HTTP/1.1")
	case r.ContentLength > 0 || len(r.TransferEncoding) > 0: // nbhttp reports -1 when there is no length
		refuse(w, http.StatusBadRequest, "400 bad request: a WebSocket upgrade carries no body")
	case !hasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		refuse(w, http.StatusUpgradeRequired, "426 upgrade required: this is a WebSocket endpoint (Upgrade: websocket)")
	case !hasToken(r.Header, "Connection", "upgrade"):
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		refuse(w, http.StatusUpgradeRequired, "426 upgrade required: the Connection header must contain Upgrade")
	case strings.TrimSpace(r.Header.Get("Sec-WebSocket-Version")) != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		refuse(w, http.StatusBadRequest, "400 bad request: unsupported Sec-WebSocket-Version (this server speaks 13)")
	case !wsproto.ValidKey(r.Header.Get("Sec-WebSocket-Key")):
		refuse(w, http.StatusBadRequest, "400 bad request: missing or invalid Sec-WebSocket-Key")
	default:
		return true
	}
	s.stats.refusedBad.Add(1)
	return false
}

// originAllowed applies the origin policy of Config.AllowedOrigins.
func (s *Server) originAllowed(r *http.Request) bool {
	if len(r.Header["Origin"]) > 1 {
		return false // a browser sends one: which would be checked, which believed?
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: no ambient credentials to abuse
	}
	if s.anyOrigin {
		return true
	}
	co, ok := canonicalOrigin(origin)
	if !ok {
		return false // "null", or not an http(s) origin
	}
	if s.origins[co] {
		return true
	}
	// The server's own origin: scheme, host and port all as it is reached.
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
	}
	own, ok := canonicalHost(r.Host, scheme)
	if !ok || co != scheme+"://"+own {
		return false
	}
	// The Host header is the page's: a page whose name an attacker pointed
	// at this server (DNS rebinding) sends its own name in both. Only a
	// host that cannot be rebound is the server's own; a name it is
	// reached by must be listed in AllowedOrigins.
	name, _, _ := net.SplitHostPort(own)
	return s.ownHost(name)
}

// ownHost reports whether name (lower-case, without a port) can only mean
// this server: an IP address, localhost or a name under it (browsers
// resolve those to loopback themselves), or the host name of Config.Addr.
func (s *Server) ownHost(name string) bool {
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	return name == s.listenName
}

// release gives back a client slot.
func (s *Server) release() {
	if s.live.Add(-1) == 0 && s.draining.Load() {
		s.drainOnce.Do(func() { close(s.drained) })
	}
}

// upgrade runs on the executor as the HTTP handler of a mounted path.
func (s *Server) upgrade(ep *Endpoint, w http.ResponseWriter, r *http.Request) {
	if !s.checkUpgrade(w, r) {
		return
	}
	if !s.originAllowed(r) {
		s.stats.refusedOrigin.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(originRefusedBody))
		return
	}
	if s.draining.Load() {
		s.stats.refusedLimit.Add(1)
		refuse(w, http.StatusServiceUnavailable, "503 service unavailable: the server is shutting down")
		return
	}
	s.live.Add(1) // an upgrade in progress counts: Shutdown waits for it
	reserved := true
	defer func() {
		if reserved {
			s.release()
		}
	}()

	data, err := s.callHandshake(ep, r)
	if err != nil {
		s.stats.refusedApp.Add(1)
		var he *HTTPError
		if errors.As(err, &he) {
			for k, vs := range he.Header {
				w.Header()[k] = vs
			}
			if w.Header().Get("Content-Type") == "" {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("X-Content-Type-Options", "nosniff")
			}
			w.WriteHeader(he.Status)
			_, _ = w.Write([]byte(he.Body))
			return
		}
		s.log.Error("handshake failed", "path", ep.path, "remote", r.RemoteAddr, "err", err)
		refuse(w, http.StatusInternalServerError, "500 internal server error")
		return
	}
	// A slot is taken once the application has said who the client is: a
	// privileged one may use the reserved slots, and any may take a silent
	// guest's.
	priv := privileged(data)
	if !s.admit(priv, r.RemoteAddr) {
		s.stats.refusedLimit.Add(1)
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable,
			fmt.Sprintf("503 service unavailable: the server holds its maximum of %d clients", s.cfg.MaxConnections))
		return
	}

	hj, ok := w.(http.Hijacker)
	if !ok {
		refuse(w, http.StatusInternalServerError, "500 internal server error: connection cannot be upgraded")
		return
	}
	raw, _, err := hj.Hijack()
	if err != nil {
		s.log.Error("hijack failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	hc, _ := raw.(*nbhttp.Conn)
	var nbc *nbio.Conn
	var out io.Writer
	if hc != nil {
		switch under := hc.Conn.(type) {
		case *nbio.Conn:
			nbc, out = under, under
		case *ltls.Conn: // TLS: frames are shared, encryption is per client
			nbc, _ = under.Conn().(*nbio.Conn)
			out = under
		}
	}
	if nbc == nil {
		s.log.Error("upgrade of an unsupported connection type", "type", fmt.Sprintf("%T", raw))
		_ = raw.Close()
		return
	}

	id := ClientID(s.nextID.Add(1))
	c := &conn{
		id:          id,
		ep:          ep,
		nbc:         nbc,
		hc:          hc,
		out:         out,
		w:           s.writers[uint64(id)%uint64(len(s.writers))],
		connectedAt: time.Now().UnixNano(),
		head:        -1,
		tail:        -1,
		memberIdx:   -1,
	}
	if tc, ok := out.(*ltls.Conn); ok {
		// The queue counts what nbio holds, which with TLS is ciphertext:
		// the writer adds each record's overhead to what it hands over
		// (the queue used to drift below zero by that much per write,
		// until the slow-consumer limits no longer worked).
		c.tlsOverhead = int16(tlsRecordOverhead(tc.ConnectionState()))
	}
	hc.Parser = nil
	nbc.SetSession(c) // from now on the poller hands bytes to c.Parse
	s.limits.upgraded(r.RemoteAddr)

	_ = nbc.SetReadDeadline(time.Time{}) // heartbeats decide when an idle client is dead
	// SocketWriteBuffer and SocketReadBuffer are the listening socket's,
	// which every accepted one inherits (Server.listenerOptions).
	s.stats.accepted.Add(1)
	var ext string
	if s.cfg.Compression {
		if c.deflate, ext = negotiateDeflate(&s.cfg, r.Header.Values("Sec-WebSocket-Extensions")); c.deflate != nil {
			s.stats.deflateConns.Add(1)
		}
	}
	c.w.post(job{kind: jobOpen, c: c, f: newUpgradeResponse(r.Header.Get("Sec-WebSocket-Key"), ext)})
	// Found by sends only now, after its 101 is queued: whatever they post
	// to its writer comes after the 101.
	ep.add(c)
	reserved = false // ep.remove releases it from now on
	if !priv {
		s.silent.push(ep, id, s.live.Load())
	}
	if s.draining.Load() {
		// Shutdown began while this client upgraded: its writer may have
		// closed every client before this one was among them.
		c.startClose(StatusGoingAway, shutdownReason)
	}
	c.flags.Store(flagOpened, true)
	ep.callOpen(c, data)
	c.flags.Store(flagReady, true)
}

// tlsRecordOverhead is what a TLS record adds to its plaintext with the
// connection's version and cipher suite (the server offers AEAD suites
// only): header and tag, plus the content type in TLS 1.3 or the explicit
// nonce of AES-GCM in TLS 1.2.
func tlsRecordOverhead(st ltls.ConnectionState) int {
	switch {
	case st.Version >= ltls.VersionTLS13:
		return 5 + 1 + 16
	case st.CipherSuite == ltls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 ||
		st.CipherSuite == ltls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
		return 5 + 16
	default:
		return 5 + 8 + 16
	}
}

// tlsWireSize is the ciphertext of n bytes of plaintext written at once:
// records of at most 16 KiB (the server turns dynamic record sizing off),
// each with overhead bytes more.
func tlsWireSize(n, overhead int) int {
	const maxPlaintext = 16 << 10
	return n + (n+maxPlaintext-1)/maxPlaintext*overhead
}

func (s *Server) callHandshake(ep *Endpoint, r *http.Request) (data any, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.stats.appPanics.Add(1)
			s.log.Error("application panic", "callback", "OnHandshake", "path", ep.path, "panic", fmt.Sprint(v))
			err = fmt.Errorf("OnHandshake panicked: %v", v)
		}
	}()
	return ep.app.OnHandshake(r)
}
