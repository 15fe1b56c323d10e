// Package authtest mints connect tokens for tests: an HMAC secret in a
// file, a Verifier for it, and signed tokens with the claims a test needs.
package authtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/auth"
)

// Audience is the audience of the tokens Issuer mints and its Verifier
// checks.
const Audience = "parley"

// Issuer signs tokens with an HS256 secret.
type Issuer struct {
	t      testing.TB
	Secret []byte
	// SecretFile holds Secret, for --jwt-secret.
	SecretFile string
}

// New returns an Issuer with a secret file in the test's temporary
// directory.
func New(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{t: t, Secret: []byte("a-secret-of-at-least-32-bytes-for-hs256")}
	is.SecretFile = filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(is.SecretFile, is.Secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return is
}

// Verifier returns a Verifier of the issuer's tokens, checking Audience.
func (is *Issuer) Verifier() *auth.Verifier {
	is.t.Helper()
	v, err := auth.New(auth.Config{HMACSecrets: []auth.KeyFile{{Path: is.SecretFile}}, Audience: Audience})
	if err != nil {
		is.t.Fatal(err)
	}
	return v
}

// Claims returns valid claims for user, for a minute.
func Claims(user string) *auth.Claims {
	now := time.Now()
	return &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: user, Audience: jwt.ClaimStrings{Audience},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}}
}

// Sign signs c.
func (is *Issuer) Sign(c *auth.Claims) string {
	is.t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(is.Secret)
	if err != nil {
		is.t.Fatal(err)
	}
	return s
}

// Token returns a valid token for user, for a minute.
func (is *Issuer) Token(user string) string { return is.Sign(Claims(user)) }
