package engine

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"

	"github.com/parleyhq/parley/internal/wsproto"
)

// permessage-deflate (RFC 7692), with github.com/klauspost/compress/flate.
//
// The server always compresses without context takeover
// (server_no_context_takeover): each message is deflated on its own, so one
// compressed frame serves every recipient that negotiated the extension,
// and a broadcast is compressed once, by the first writer that needs it
// (frame.compressed). Clients are asked not to use context takeover either
// (client_no_context_takeover) unless Config.CompressionContextTakeover
// allows it, which costs a 32 KiB dictionary per such client.

// rsv1 is the RSV1 bit as wsproto.Header.RSV holds it: "compressed".
const rsv1 = 4

// maxWindow is the inflater's dictionary: 32 KiB, the largest window.
const maxWindow = 32 << 10

// deflateParams is what a client negotiated.
type deflateParams struct {
	serverBits uint8  // server_max_window_bits it asked for; 0: none (15)
	takeover   bool   // it compresses with context takeover
	dict       []byte // the last maxWindow bytes it sent, while takeover
}

// errBadOffer marks an extension offer this server declines.
var errBadOffer = errors.New("engine: bad permessage-deflate offer")

// negotiateDeflate picks the first acceptable permessage-deflate offer of a
// request's Sec-WebSocket-Extensions headers and returns what was agreed
// and the response's header value; nil and "" when there is none.
func negotiateDeflate(cfg *Config, headers []string) (*deflateParams, string) {
	for _, h := range headers {
		for _, offer := range splitOutsideQuotes(h, ',') {
			p, resp, err := deflateOffer(cfg, offer)
			if err == nil {
				return p, resp
			}
		}
	}
	return nil, ""
}

// deflateOffer reads one offer ("permessage-deflate; param[=value]...").
func deflateOffer(cfg *Config, offer string) (*deflateParams, string, error) {
	parts := splitOutsideQuotes(offer, ';')
	if strings.TrimSpace(parts[0]) != "permessage-deflate" {
		return nil, "", errBadOffer
	}
	p := &deflateParams{}
	seen := map[string]bool{}
	clientNoTakeover := false
	for _, param := range parts[1:] {
		name, value, hasValue := strings.Cut(strings.TrimSpace(param), "=")
		name = strings.TrimSpace(name)
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if seen[name] {
			return nil, "", errBadOffer // a parameter given twice (RFC 7692 7)
		}
		seen[name] = true
		switch name {
		case "server_no_context_takeover":
			if hasValue {
				return nil, "", errBadOffer
			}
		case "client_no_context_takeover":
			if hasValue {
				return nil, "", errBadOffer
			}
			clientNoTakeover = true
		case "server_max_window_bits":
			bits, ok := windowBits(value)
			if !hasValue || !ok {
				return nil, "", errBadOffer
			}
			p.serverBits = bits
		case "client_max_window_bits":
			// The client tells it can be limited; the inflater takes any
			// window, so none is imposed.
			if _, ok := windowBits(value); hasValue && !ok {
				return nil, "", errBadOffer
			}
		default:
			return nil, "", errBadOffer
		}
	}
	resp := "permessage-deflate; server_no_context_takeover"
	if clientNoTakeover || !cfg.CompressionContextTakeover {
		resp += "; client_no_context_takeover"
	} else {
		p.takeover = true
	}
	if p.serverBits != 0 {
		resp += "; server_max_window_bits=" + strconv.Itoa(int(p.serverBits))
	}
	return p, resp, nil
}

// windowBits reads a max_window_bits value: 8 to 15, no leading zero.
func windowBits(v string) (uint8, bool) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 || strconv.Itoa(n) != v {
		return 0, false
	}
	return uint8(n), true
}

// splitOutsideQuotes splits s at sep where sep is not inside a quoted
// string.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// inflate returns the message of the compressed bytes in, at most limit
// bytes (wsproto.Inflate). With p.takeover, the client's earlier messages
// are the dictionary, and this one joins it.
func inflate(p *deflateParams, in []byte, limit int) (*[]byte, error) {
	var dict []byte
	if p.takeover {
		dict = p.dict
	}
	out, err := wsproto.Inflate(in, dict, limit)
	if err == nil && p.takeover {
		p.dict = appendWindow(p.dict, *out)
	}
	return out, err
}

// appendWindow keeps the last maxWindow bytes of dict followed by b. The
// window's array grows by doubling up to exactly maxWindow, never past it
// (append's growth left arrays of up to 40 KiB).
func appendWindow(dict, b []byte) []byte {
	if len(b) >= maxWindow {
		b = b[len(b)-maxWindow:]
	}
	if keep := maxWindow - len(b); len(dict) > keep {
		dict = append(dict[:0], dict[len(dict)-keep:]...) // within its array
	}
	if need := len(dict) + len(b); need > cap(dict) {
		grown := make([]byte, len(dict), min(maxWindow, max(need, 2*cap(dict))))
		copy(grown, dict)
		dict = grown
	}
	return append(dict, b...)
}

// deflaters pools flate writers, by level (1-9).
type deflaters [10]sync.Pool

// deflate appends the compressed bytes of payload, without the trailing
// 00 00 ff ff (RFC 7692 7.2.1), to dst.
func (d *deflaters) deflate(level int, dst, payload []byte) []byte {
	buf := bytes.NewBuffer(dst)
	w, _ := d[level].Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(buf, level) // levels are checked by Config.Validate
	} else {
		w.Reset(buf)
	}
	_, _ = w.Write(payload) // a bytes.Buffer does not fail
	_ = w.Flush()
	d[level].Put(w)
	return bytes.TrimSuffix(buf.Bytes(), wsproto.DeflateTail[:4])
}

// compressed returns the frame to send a client that negotiated
// permessage-deflate: f's compressed twin, made once for every recipient
// (RSV1 set, compressed without context takeover), or f itself when f is
// not a data frame, is under the threshold, is longer than the client's
// server_max_window_bits allow, or does not shrink.
func (f *frame) compressed(srv *Server, p *deflateParams) *frame {
	n := len(f.buf) - f.hdr
	if !f.data || f.raw || n < srv.cfg.CompressionThreshold || p.serverBits != 0 && n > 1<<p.serverBits {
		return f
	}
	if z := f.z.Load(); z != nil {
		return z // the common case: made by the first recipient's writer
	}
	f.zmu.Lock()
	defer f.zmu.Unlock()
	if f.z.Load() == nil {
		payload := f.buf[f.hdr:]
		zp := srv.deflaters.deflate(srv.cfg.CompressionLevel, make([]byte, 0, n), payload) // once per frame, not per recipient
		if len(zp) >= n {
			f.z.Store(f) // does not shrink: sent as it is
		} else {
			z := getFrame(wsproto.HeaderLen(len(zp), false) + len(zp))
			z.buf = wsproto.AppendFrame(z.buf, wsproto.Opcode(f.buf[0]&0x0f), zp)
			z.buf[0] |= rsv1 << 4
			z.data, z.raw, z.born, z.hdr = true, false, f.born, wsproto.HeaderLen(len(zp), false)
			z.refs.Store(1)
			f.z.Store(z)
			srv.stats.compressed.Add(1)
			srv.stats.compressedIn.Add(uint64(n))
			srv.stats.compressedOut.Add(uint64(len(zp)))
		}
	}
	return f.z.Load()
}
