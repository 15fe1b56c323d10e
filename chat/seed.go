package chat

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/parleyhq/parley/engine"
)

// Seed is the seed demo's chat: every non-blank text message a client sends
// is broadcast to all clients, the sender included, as "<sender IP>: <text>".
// Binary messages are ignored. Its zero value is ready to mount.
type Seed struct {
	ep  *engine.Endpoint
	mu  sync.RWMutex
	ips map[engine.ClientID]string
}

var _ engine.Application = (*Seed)(nil)

// OnStart keeps the endpoint.
func (s *Seed) OnStart(ep *engine.Endpoint) error {
	s.ep = ep
	s.ips = make(map[engine.ClientID]string)
	return nil
}

// OnHandshake hands the client's IP to OnOpen, as the seed did.
func (s *Seed) OnHandshake(r *http.Request) (any, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return nil, fmt.Errorf("chat: remote address %q: %w", r.RemoteAddr, err)
	}
	return host, nil
}

// OnOpen names the client by its IP.
func (s *Seed) OnOpen(id engine.ClientID, data any) {
	ip, _ := data.(string)
	s.mu.Lock()
	s.ips[id] = ip
	s.mu.Unlock()
}

// OnMessage broadcasts text messages.
func (s *Seed) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	if typ != engine.Text || len(bytes.TrimSpace(data)) == 0 {
		return
	}
	s.mu.RLock()
	ip := s.ips[id]
	s.mu.RUnlock()
	msg := make([]byte, 0, len(ip)+2+len(data))
	msg = append(append(append(msg, ip...), ": "...), data...)
	_, _ = s.ep.Broadcast(engine.Text, msg)
}

// OnClose forgets the client.
func (s *Seed) OnClose(id engine.ClientID, _ engine.StatusCode, _ string) {
	s.mu.Lock()
	delete(s.ips, id)
	s.mu.Unlock()
}

// OnStop does nothing: the engine has closed every client.
func (s *Seed) OnStop() {}
