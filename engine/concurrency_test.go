package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// concurrent payloads: sender (1 byte), seq (8 bytes), then seq's low byte
// repeated a length that varies from 0 to 3000, so that a torn, cut or
// interleaved frame cannot pass for a whole one.
func concurrentPayload(sender byte, seq uint64, n int) []byte {
	b := make([]byte, 9+n)
	b[0] = sender
	binary.BigEndian.PutUint64(b[1:], seq)
	for i := range n {
		b[9+i] = byte(seq)
	}
	return b
}

func checkPayload(b []byte, last map[byte]uint64) error {
	if len(b) == 3 && string(b) == "end" {
		return nil
	}
	if len(b) < 9 {
		return fmt.Errorf("short payload of %d bytes", len(b))
	}
	sender, seq := b[0], binary.BigEndian.Uint64(b[1:])
	for _, x := range b[9:] {
		if x != byte(seq) {
			return fmt.Errorf("sender %d seq %d: corrupt payload", sender, seq)
		}
	}
	if prev, ok := last[sender]; ok && seq <= prev {
		return fmt.Errorf("sender %d: seq %d after %d", sender, seq, prev)
	}
	last[sender] = seq
	return nil
}

func TestConcurrentSendsKeepFramesWhole(t *testing.T) {
	t.Parallel()
	const senders, perCycle, cycles = 6, 25, 40
	app := newRecorder()
	_, url := start(t, engine.Config{Writers: 3}, app)

	var (
		mu      sync.Mutex
		ids     []engine.ClientID
		readers sync.WaitGroup
		errs    = make(chan error, 1000)
		checked atomic.Int64
		joins   atomic.Int64
	)
	// join connects a client whose reader checks everything it receives
	// until "end" or a close.
	join := func() (*wstest.Conn, engine.ClientID) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := wstest.Dial(ctx, url, nil)
		if err != nil {
			errs <- err
			return nil, 0
		}
		id := app.next(t, "open").id
		joins.Add(1)
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			last := map[byte]uint64{}
			for {
				op, p, err := c.ReadMessage()
				var ce *wstest.CloseError
				switch {
				case errors.As(err, &ce):
					_ = c.WriteClose(ce.Code, "")
					return
				case errors.Is(err, io.EOF):
					return
				case err != nil:
					errs <- fmt.Errorf("client %d: %w", id, err)
					return
				case op != wsproto.OpBinary && op != wsproto.OpText:
					errs <- fmt.Errorf("client %d: opcode %v", id, op)
					return
				}
				if err := checkPayload(p, last); err != nil {
					errs <- fmt.Errorf("client %d: %w", id, err)
					return
				}
				checked.Add(1)
				if string(p) == "end" {
					return
				}
			}
		}()
		return c, id
	}
	leave := func(r *rand.Rand, ep *engine.Endpoint, conns map[engine.ClientID]*wstest.Conn) {
		mu.Lock()
		if len(ids) < 5 {
			mu.Unlock()
			return
		}
		i := r.IntN(len(ids))
		id := ids[i]
		ids = append(ids[:i], ids[i+1:]...)
		mu.Unlock()
		if r.IntN(2) == 0 {
			_ = ep.Close(id, 4000, "bye") // the server closes it
		} else if c := conns[id]; c != nil {
			_ = c.WriteClose(1000, "leaving") // the client closes it
		}
	}

	conns := map[engine.ClientID]*wstest.Conn{}
	for range 20 {
		if c, id := join(); c != nil {
			conns[id] = c
		}
	}
	ep := app.endpoint()
	// Senders and churn go in lockstep: each cycle, every sender sends
	// perCycle messages while one client joins and one leaves.
	cycleStart := make([]chan struct{}, cycles)
	for i := range cycleStart {
		cycleStart[i] = make(chan struct{})
	}
	var cycleSent sync.WaitGroup
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		r := rand.New(rand.NewPCG(7, 7))
		for i := range cycles {
			cycleSent.Add(senders)
			close(cycleStart[i])
			if c, id := join(); c != nil {
				conns[id] = c
			}
			leave(r, ep, conns)
			cycleSent.Wait()
		}
	}()

	var sendersWG sync.WaitGroup
	for g := range senders {
		sendersWG.Add(1)
		go func() {
			defer sendersWG.Done()
			defer cycleSent.Done() // the last cycle's
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for seq := uint64(1); seq <= perCycle*cycles; seq++ {
				if seq%perCycle == 1 {
					if seq > 1 {
						cycleSent.Done()
					}
					<-cycleStart[seq/perCycle]
				}
				p := concurrentPayload(byte(g), seq, r.IntN(3000))
				mu.Lock()
				snapshot := append([]engine.ClientID(nil), ids...)
				mu.Unlock()
				switch r.IntN(3) {
				case 0:
					_, _ = ep.Broadcast(engine.Binary, p)
				case 1:
					var to []engine.ClientID
					for _, id := range snapshot {
						if r.IntN(2) == 0 {
							to = append(to, id)
						}
					}
					_, _ = ep.Multicast(to, engine.Binary, p)
				default:
					if len(snapshot) > 0 {
						_ = ep.Send(snapshot[r.IntN(len(snapshot))], engine.Binary, p)
					}
				}
			}
		}()
	}
	sendersWG.Wait()
	<-churnDone
	if _, err := ep.Broadcast(engine.Text, []byte("end")); err != nil {
		t.Fatal(err)
	}
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d messages checked across %d clients that joined (20 at first)", checked.Load(), joins.Load())
	if checked.Load() < senders*perCycle*cycles || joins.Load() < 20+cycles {
		t.Fatalf("too little happened to prove anything: %d messages, %d joins", checked.Load(), joins.Load())
	}
}
