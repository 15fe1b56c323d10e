package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/parleyhq/parley/internal/poll"
)

// startNATSProcess runs `parley nats` on addr with its store in dir and
// waits until it accepts connections.
func startNATSProcess(t *testing.T, addr, tokenFile, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "nats", "--addr", addr, "--token-file", tokenFile, "--store-dir", dir, "--log-level", "error")
	cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	poll.Until(t, "NATS to listen on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cmd
}

// TestHealthProbes: /healthz answers while the process does; /readyz
// answers 200 while the node's NATS and JetStream answer, 503 while
// they do not, and 200 again once they are back.
func TestHealthProbes(t *testing.T) {
	_, alone := startParley(t)
	if code, body := get(t, "http://"+alone+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz alone: %d %q", code, body)
	}
	if code, body := get(t, "http://"+alone+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz alone: %d %q", code, body)
	}
	resp, err := http.Post("http://"+alone+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /readyz: %d, want 405", resp.StatusCode)
	}

	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
	token := filepath.Join(t.TempDir(), "nats.token")
	if err := os.WriteFile(token, []byte("a-token-for-this-test-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	nats := startNATSProcess(t, natsAddr, token, store)
	_, node := startParley(t, "--nats", "nats://"+natsAddr, "--nats-token-file", token, "--node", "h1")
	ready := func() (int, string) {
		resp, err := http.Get("http://" + node + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode, string(b[:n])
	}
	poll.Until(t, "the node to be ready", func() bool { code, _ := ready(); return code == 200 })
	if err := nats.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = nats.Wait()
	var body string
	poll.Until(t, "the node to be not ready without NATS", func() bool {
		var code int
		code, body = ready()
		return code == 503
	})
	if !strings.Contains(body, "not ready") {
		t.Fatalf("/readyz without NATS: %q", body)
	}
	if code, _ := get(t, "http://"+node+"/healthz"); code != 200 {
		t.Fatalf("/healthz without NATS: %d: the process lives", code)
	}
	startNATSProcess(t, natsAddr, token, store)
	poll.Until(t, "the node to be ready again", func() bool { code, _ := ready(); return code == 200 })
}
