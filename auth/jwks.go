package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// jwk is one key of a JWKS file (RFC 7517, 7518 6, 8037). Private members
// ("d", "p", ...) are refused: a key set for verifying holds public keys.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
	D   string `json:"d"`
}

// loadJWKS reads a JWKS file's keys. Keys meant for encryption ("use":
// "enc") are skipped; any other key that cannot be used is an error
// naming it.
func loadJWKS(path string) ([]key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", path, err)
	}
	var out []key
	for i, raw := range set.Keys {
		var j jwk
		d := json.NewDecoder(bytes.NewReader(raw))
		if err := d.Decode(&j); err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: key %d: %w", path, i, err)
		}
		if j.Use == "enc" {
			continue
		}
		k, err := j.key()
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: key %d (kid %q): %w", path, i, j.Kid, err)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("auth: JWKS %s: no signature key", path)
	}
	return out, nil
}

func (j *jwk) key() (key, error) {
	if j.D != "" {
		return key{}, errors.New("holds a private key")
	}
	var pub any
	switch j.Kty {
	case "oct":
		k, err := b64(j.K, "k")
		if err != nil {
			return key{}, err
		}
		alg := j.Alg
		if alg == "" {
			alg = "HS256"
		}
		if algs[alg] != "hmac" {
			return key{}, fmt.Errorf("algorithm %q does not fit an oct key", alg)
		}
		if len(k) < minSecret(alg) {
			return key{}, fmt.Errorf("secret of %d bytes, want at least %d for %s", len(k), minSecret(alg), alg)
		}
		return key{id: j.Kid, alg: alg, k: k}, nil
	case "RSA":
		n, err := b64(j.N, "n")
		if err != nil {
			return key{}, err
		}
		e, err := b64(j.E, "e")
		if err != nil {
			return key{}, err
		}
		if len(e) > 4 {
			return key{}, errors.New(`"e" too large`)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case "EC":
		var c elliptic.Curve
		switch j.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return key{}, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := b64(j.X, "x")
		if err != nil {
			return key{}, err
		}
		y, err := b64(j.Y, "y")
		if err != nil {
			return key{}, err
		}
		size := (c.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return key{}, errors.New("coordinates of the wrong size")
		}
		// ecdsa.ParseUncompressedPublicKey checks the point is on the curve.
		p, err := ecdsa.ParseUncompressedPublicKey(c, append(append([]byte{4}, x...), y...))
		if err != nil {
			return key{}, err
		}
		pub = p
	case "OKP":
		if j.Crv != "Ed25519" {
			return key{}, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := b64(j.X, "x")
		if err != nil {
			return key{}, err
		}
		if len(x) != ed25519.PublicKeySize {
			return key{}, errors.New("Ed25519 key of the wrong size")
		}
		pub = ed25519.PublicKey(x)
	default:
		return key{}, fmt.Errorf("unsupported key type %q", j.Kty)
	}
	k, err := pinned(pub, j.Alg)
	if err != nil {
		return key{}, err
	}
	k.id = j.Kid
	return k, nil
}

func b64(s, name string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("no %q", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	return b, nil
}
