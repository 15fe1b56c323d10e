package natsbroker_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/testserver"
)

// TestCredentials: a NATS server that requires TLS and a user with a
// password or an NKey; the broker connects with each kind of credentials
// and the CA, and is refused without them.
func TestCredentials(t *testing.T) {
	t.Parallel()
	cert, key, ca, _ := testserver.SelfSigned(t)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, TLSConfig: tlsCfg, TLS: true, TLSVerify: false,
		Users: []*server.User{{Username: "parley", Password: "a-password-for-tests"}},
		Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	url := ns.ClientURL()
	for _, tc := range []struct {
		name string
		cfg  natsbroker.Config
		want string // "" to connect
	}{
		{"user and password over TLS", natsbroker.Config{User: "parley", Password: "a-password-for-tests", CAFile: ca}, ""},
		{"NKey over TLS", natsbroker.Config{NKeySeedFile: seedFile, CAFile: ca}, ""},
		{"a wrong password", natsbroker.Config{User: "parley", Password: "wrong", CAFile: ca}, "authorization"},
		{"no credentials", natsbroker.Config{CAFile: ca}, "authorization"},
		{"no CA: the certificate is not trusted", natsbroker.Config{User: "parley", Password: "a-password-for-tests"}, "certificate"},
		{"a missing seed file", natsbroker.Config{NKeySeedFile: filepath.Join(t.TempDir(), "none"), CAFile: ca}, "NKeySeedFile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.URL, cfg.Node, cfg.Logger = url, "c1", quiet()
			b, err := natsbroker.New(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want == "":
				if err := b.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			case err == nil:
				b.Close(context.Background())
				t.Fatalf("connected, want an error with %q", tc.want)
			case !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)):
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	for _, bad := range []natsbroker.Config{
		{URL: url, Token: "t", User: "u", Password: "p"},
		{URL: url, User: "u"},
		{URL: url, CertFile: "c.pem"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v): want an error", bad)
		}
	}
}
