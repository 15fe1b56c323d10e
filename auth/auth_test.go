package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keys are one key of each kind, with their files.
type keys struct {
	secret             []byte
	rsa                *rsa.PrivateKey
	ec                 *ecdsa.PrivateKey
	ed                 ed25519.PrivateKey
	secretF, rsaF, ecF string
	edF, jwksF         string
	otherRSA           *rsa.PrivateKey
	otherSecret        []byte
	rsaPubPEMData      []byte
}

func writePEM(t testing.TB, dir, name string, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	dir := t.TempDir()
	k := &keys{secret: []byte(strings.Repeat("s3cret-", 6)), otherSecret: []byte(strings.Repeat("other-", 11))}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	k.secretF = filepath.Join(dir, "secret")
	if err := os.WriteFile(k.secretF, append(k.secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	k.rsaF, k.rsaPubPEMData = writePEM(t, dir, "rsa.pem", &k.rsa.PublicKey)
	k.ecF, _ = writePEM(t, dir, "ec.pem", &k.ec.PublicKey)
	k.edF, _ = writePEM(t, dir, "ed.pem", k.ed.Public())
	enc := base64.RawURLEncoding.EncodeToString
	jwks := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "alg": "PS256", "n": enc(k.otherRSA.N.Bytes()), "e": enc([]byte{1, 0, 1})},
		{"kty": "oct", "kid": "h1", "alg": "HS512", "k": enc(k.otherSecret)},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": enc(k.ec.X.FillBytes(make([]byte, 32))), "y": enc(k.ec.Y.FillBytes(make([]byte, 32)))},
		{"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": enc(k.ed.Public().(ed25519.PublicKey))},
		{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
	}}
	b, _ := json.Marshal(jwks)
	k.jwksF = filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(k.jwksF, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.Claims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, exp time.Duration) Claims {
	now := time.Now()
	return Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(now.Add(exp)),
		IssuedAt: jwt.NewNumericDate(now)}, Nick: "Alice", Rooms: []string{"team-*"}}
}

func TestVerify(t *testing.T) {
	k := newKeys(t)
	v, err := New(Config{HMACSecrets: []KeyFile{{Path: k.secretF}}, PublicKeys: []KeyFile{{Path: k.rsaF}, {Path: k.ecF}, {Path: k.edF}},
		Audience: "parley", Issuer: "https://id.example"})
	if err != nil {
		t.Fatal(err)
	}
	good := func() Claims {
		c := claims("u1", time.Minute)
		c.Audience, c.Issuer = jwt.ClaimStrings{"parley"}, "https://id.example"
		return c
	}
	with := func(f func(*Claims)) Claims { c := good(); f(&c); return c }
	// A token whose header says none, with no signature.
	none := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		b, _ := json.Marshal(good())
		return h + "." + base64.RawURLEncoding.EncodeToString(b) + "."
	}()
	// Tokens signed by hand: a claim given twice, a crit header.
	raw := func(hdr, claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		s := enc([]byte(hdr)) + "." + enc([]byte(claims))
		sig, _ := jwt.SigningMethodHS256.Sign(s, k.secret)
		return s + "." + enc(sig)
	}
	exp := time.Now().Add(time.Minute).Unix()
	twice := raw(`{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"u1","sub":"admin","aud":"parley","iss":"https://id.example","exp":%d,"nick":"Alice"}`, exp))
	crit := raw(`{"alg":"HS256","crit":["b64"],"b64":false}`, fmt.Sprintf(`{"sub":"u1","aud":"parley","iss":"https://id.example","exp":%d}`, exp))
	wrongType := raw(`{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"u1","aud":"parley","iss":"https://id.example","exp":%d,"rooms":"all"}`, exp))
	forged := sign(t, jwt.SigningMethodHS256, k.secret, good(), nil)
	forged = forged[:len(forged)-4] + "AAAA"
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, k.secret, good(), nil), nil},
		{"RS256", sign(t, jwt.SigningMethodRS256, k.rsa, good(), nil), nil},
		{"ES256", sign(t, jwt.SigningMethodES256, k.ec, good(), nil), nil},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, k.ed, good(), nil), nil},
		{"missing", "", ErrMissing},
		{"garbage", "not.a.token", ErrInvalid},
		{"too long", strings.Repeat("a", MaxTokenLength+1), ErrInvalid},
		{"forged signature", forged, ErrInvalid},
		{"other secret", sign(t, jwt.SigningMethodHS256, k.otherSecret, good(), nil), ErrInvalid},
		{"alg none", none, ErrInvalid},
		// The classic confusion: HMAC keyed with the RSA public key's PEM.
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, k.rsaPubPEMData, good(), nil), ErrInvalid},
		{"RS384 with an RS256-pinned key", sign(t, jwt.SigningMethodRS384, k.rsa, good(), nil), ErrInvalid},
		{"HS512 with an HS256-pinned secret", sign(t, jwt.SigningMethodHS512, k.secret, good(), nil), ErrInvalid},
		{"expired", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), nil), ErrExpired},
		{"expired within the leeway", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Second)) }), nil), nil},
		{"no exp", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.ExpiresAt = nil }), nil), ErrInvalid},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Minute)) }), nil), ErrNotYet},
		{"issued in the future", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Minute)) }), nil), ErrNotYet},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other"} }), nil), ErrAudience},
		{"no audience", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Audience = nil }), nil), ErrAudience},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Issuer = "evil" }), nil), ErrAudience},
		{"no sub", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Subject = "" }), nil), ErrInvalid},
		{"control in sub", sign(t, jwt.SigningMethodHS256, k.secret, with(func(c *Claims) { c.Subject = "a\nb" }), nil), ErrInvalid},
		{"a claim given twice", twice, ErrInvalid},
		{"a crit header", crit, ErrInvalid},
		{"rooms not a list", wrongType, ErrInvalid},
		{"four segments", sign(t, jwt.SigningMethodHS256, k.secret, good(), nil) + ".x", ErrInvalid},
		{"unknown kid", sign(t, jwt.SigningMethodHS256, k.secret, good(), map[string]any{"kid": "nope"}), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.User != "u1" || id.Nick != "Alice" || len(id.Rooms) != 1 || id.Expires.IsZero() {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) && tc.token != "" {
				t.Fatalf("the error repeats the token: %v", err)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	k := newKeys(t)
	v, err := New(Config{JWKSFile: k.jwksF})
	if err != nil {
		t.Fatal(err)
	}
	if v.Keys() != 4 {
		t.Fatalf("%d keys, want 4 (the enc key skipped)", v.Keys())
	}
	c := claims("u2", time.Minute)
	for _, tc := range []struct {
		name  string
		token string
		ok    bool
	}{
		{"PS256 by kid", sign(t, jwt.SigningMethodPS256, k.otherRSA, c, map[string]any{"kid": "r1"}), true},
		{"PS256 without kid", sign(t, jwt.SigningMethodPS256, k.otherRSA, c, nil), true},
		{"RS256 with a PS256-pinned key", sign(t, jwt.SigningMethodRS256, k.otherRSA, c, map[string]any{"kid": "r1"}), false},
		{"HS512 oct", sign(t, jwt.SigningMethodHS512, k.otherSecret, c, map[string]any{"kid": "h1"}), true},
		{"ES256 by kid", sign(t, jwt.SigningMethodES256, k.ec, c, map[string]any{"kid": "e1"}), true},
		{"EdDSA by kid", sign(t, jwt.SigningMethodEdDSA, k.ed, c, map[string]any{"kid": "d1"}), true},
		{"EdDSA with another kid", sign(t, jwt.SigningMethodEdDSA, k.ed, c, map[string]any{"kid": "e1"}), false},
		{"a key not in the set", sign(t, jwt.SigningMethodRS256, k.rsa, c, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k.ec)
	private := write("priv.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallF, _ := writePEM(t, dir, "small.pem", &small.PublicKey)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no key", Config{}, "no key"},
		{"short secret", Config{HMACSecrets: []KeyFile{{Path: write("short", "tooshort")}}}, "at least 32"},
		{"short for HS512", Config{HMACSecrets: []KeyFile{{Path: k.secretF, Alg: "HS512"}}}, "at least 64 for HS512"},
		{"missing file", Config{HMACSecrets: []KeyFile{{Path: filepath.Join(dir, "nope")}}}, "no such file"},
		{"secret with RS256", Config{HMACSecrets: []KeyFile{{Path: k.secretF, Alg: "RS256"}}}, "not HS256"},
		{"private key", Config{PublicKeys: []KeyFile{{Path: private}}}, "private key must not"},
		{"not PEM", Config{PublicKeys: []KeyFile{{Path: k.secretF}}}, "no PEM"},
		{"HS256 on an RSA key", Config{PublicKeys: []KeyFile{{Path: k.rsaF, Alg: "HS256"}}}, "does not fit"},
		{"ES384 on P-256", Config{PublicKeys: []KeyFile{{Path: k.ecF, Alg: "ES384"}}}, "curve"},
		{"small RSA", Config{PublicKeys: []KeyFile{{Path: smallF}}}, "1024 bits"},
		{"bad JWKS", Config{JWKSFile: write("bad.json", `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`)}, "wrong size"},
		{"JWKS private", Config{JWKSFile: write("priv.json", `{"keys":[{"kty":"oct","k":"AA","d":"x"}]}`)}, "private"},
		{"leeway", Config{HMACSecrets: []KeyFile{{Path: k.secretF}}, Leeway: time.Hour}, "Leeway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParseKeyFile(t *testing.T) {
	for in, want := range map[string]KeyFile{
		"/k.pem":         {Path: "/k.pem"},
		"PS256:/k.pem":   {Path: "/k.pem", Alg: "PS256"},
		"c:\\k.pem":      {Path: "c:\\k.pem"},
		"HS512:s:e:cret": {Path: "s:e:cret", Alg: "HS512"},
	} {
		if got, err := ParseKeyFile(in); err != nil || got != want {
			t.Errorf("ParseKeyFile(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		room     string
		want     bool
	}{
		{[]string{"ops"}, "ops", true},
		{[]string{"ops"}, "ops2", false},
		{[]string{"team-*"}, "team-a", true},
		{[]string{"team-*"}, "team", false},
		{[]string{"*"}, "anything", true},
		{nil, "ops", false},
	} {
		if got := Matches(tc.patterns, tc.room); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v", tc.patterns, tc.room, got)
		}
	}
}

// BenchmarkVerify is the cost of checking one connect token, per
// algorithm.
func BenchmarkVerify(b *testing.B) {
	k := newKeys(b)
	v, err := New(Config{HMACSecrets: []KeyFile{{Path: k.secretF}}, PublicKeys: []KeyFile{{Path: k.rsaF}, {Path: k.ecF}, {Path: k.edF}}})
	if err != nil {
		b.Fatal(err)
	}
	c := claims("user-12345", time.Hour)
	for _, tc := range []struct {
		name string
		m    jwt.SigningMethod
		key  crypto.PrivateKey
	}{
		{"HS256", jwt.SigningMethodHS256, k.secret},
		{"ES256", jwt.SigningMethodES256, k.ec},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed},
		{"RS256", jwt.SigningMethodRS256, k.rsa},
	} {
		tok := sign(b, tc.m, tc.key, c, nil)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}
