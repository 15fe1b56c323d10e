// Package auth verifies the signed tokens (JWT, RFC 7519) clients present
// to connect: HMAC secrets, RSA, ECDSA and Ed25519 public keys from PEM
// files, and the keys of a JWKS file (RFC 7517), each pinned to one
// algorithm. It knows nothing of chat: it turns a token into an Identity
// or an error saying why not.
//
// Verification is done with github.com/golang-jwt/jwt/v5. What this
// package adds is the policy: a token's "alg" must be the one pinned for
// the key that verifies it (no "none", no HMAC with a public key), "exp"
// is required, "nbf" and "iat" are checked with a small leeway, and "aud"
// and "iss" when configured.
package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/golang-jwt/jwt/v5"
)

// Defaults applied to zero Config fields.
const (
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultLeeway = 5 * time.Second
	// MaxTokenLength is the longest token looked at; longer ones are
	// refused before any decoding.
	MaxTokenLength = 8 << 10
	// MaxUserLength caps the "sub" claim, in bytes.
	MaxUserLength = 128
	// MaxRoomClaims caps the entries of the "rooms" and "say" claims.
	MaxRoomClaims = 256
)

// minSecret is the shortest HMAC secret accepted for alg (RFC 7518 3.2: at
// least the hash's size).
func minSecret(alg string) int {
	switch alg {
	case "HS384":
		return 48
	case "HS512":
		return 64
	}
	return 32
}

// KeyFile is a key to load, with the algorithm it is pinned to.
type KeyFile struct {
	// Path of the file: the secret's bytes for HMAC (a trailing newline
	// is dropped), a PEM public key ("PUBLIC KEY", "RSA PUBLIC KEY" or a
	// "CERTIFICATE") otherwise.
	Path string
	// Alg is the one algorithm tokens verified with this key may name.
	// Default: HS256 for a secret, RS256 for an RSA key, ES256/ES384/ES512
	// by an ECDSA key's curve, EdDSA for Ed25519.
	Alg string
	// ID, when set, is the key's "kid": a token naming a kid is checked
	// against the keys with that kid only.
	ID string
}

// ParseKeyFile reads a flag's value, "[ALG:]PATH", into a KeyFile.
func ParseKeyFile(v string) (KeyFile, error) {
	if alg, path, ok := strings.Cut(v, ":"); ok && algs[alg] != "" {
		return KeyFile{Path: path, Alg: alg}, nil
	}
	if v == "" {
		return KeyFile{}, errors.New("auth: empty key file name")
	}
	return KeyFile{Path: v}, nil
}

// algs maps the algorithms accepted to their key kind.
var algs = map[string]string{
	"HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
	"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
	"ES256": "ecdsa", "ES384": "ecdsa", "ES512": "ecdsa",
	"EdDSA": "ed25519",
}

// Config configures a Verifier. At least one key is required.
type Config struct {
	// HMACSecrets are shared secrets (at least 32 bytes each).
	HMACSecrets []KeyFile
	// PublicKeys are PEM public keys: RSA, ECDSA (P-256, P-384, P-521)
	// or Ed25519.
	PublicKeys []KeyFile
	// JWKSFile is a JSON Web Key Set; each key is pinned to its "alg", or
	// to the default for its type when it has none.
	JWKSFile string
	// Audience, when set, must be one of a token's "aud".
	Audience string
	// Issuer, when set, must be a token's "iss".
	Issuer string
	// Leeway is the clock skew tolerated. Default 5 s.
	Leeway time.Duration
	// Now returns the time tokens are checked against. Default time.Now.
	Now func() time.Time
}

// key is a verification key pinned to one algorithm.
type key struct {
	id, alg string
	k       any // []byte, *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	keys      []key
	methods   []string // the algorithms of keys
	parser    *jwt.Parser
	validator *jwt.Validator
}

// Claims are the claims a Parley token may carry beside the registered
// ones.
type Claims struct {
	jwt.RegisteredClaims
	// Nick is the name shown for the user (default: its sub).
	Nick string `json:"nick,omitempty"`
	// Rooms are the private rooms the user may join: names, or prefixes
	// ending in '*'.
	Rooms []string `json:"rooms,omitempty"`
	// Say are the read-only rooms the user may say in, as Rooms.
	Say []string `json:"say,omitempty"`
	// Moderate are the rooms where the user may delete anyone's
	// messages, as Rooms.
	Moderate []string `json:"moderate,omitempty"`
}

// Identity is who a valid token names, and what it grants.
type Identity struct {
	User     string    // the "sub" claim
	Nick     string    // the "nick" claim, "" if none
	Rooms    []string  // private rooms it may join (names or prefixes ending in '*')
	Say      []string  // read-only rooms it may say in
	Moderate []string  // rooms where it may delete anyone's messages
	Expires  time.Time // the "exp" claim
}

// Errors of Verify, by reason. Verify's errors wrap one of them.
var (
	ErrMissing  = errors.New("token missing")
	ErrInvalid  = errors.New("token invalid")
	ErrExpired  = errors.New("token expired")
	ErrNotYet   = errors.New("token not yet valid")
	ErrAudience = errors.New("token for another audience")
)

// Reason names err's reason for metrics: "missing", "expired",
// "not_yet_valid", "audience" or "invalid".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMissing):
		return "missing"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrNotYet):
		return "not_yet_valid"
	case errors.Is(err, ErrAudience):
		return "audience"
	}
	return "invalid"
}

// New loads cfg's keys, or returns an error naming the bad one.
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	for _, kf := range cfg.HMACSecrets {
		k, err := loadSecret(kf)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, k)
	}
	for _, kf := range cfg.PublicKeys {
		k, err := loadPublicKey(kf)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, k)
	}
	if cfg.JWKSFile != "" {
		ks, err := loadJWKS(cfg.JWKSFile)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, ks...)
	}
	if len(v.keys) == 0 {
		return nil, errors.New("auth: no key configured")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Leeway < 0 || cfg.Leeway > 5*time.Minute {
		return nil, fmt.Errorf("auth: Leeway (%v) must be 0 to 5m", cfg.Leeway)
	}
	for _, k := range v.keys {
		if !slices.Contains(v.methods, k.alg) {
			v.methods = append(v.methods, k.alg)
		}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.methods), jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithStrictDecoding()}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	v.parser, v.validator = jwt.NewParser(opts...), jwt.NewValidator(opts...)
	return v, nil
}

// Keys returns the number of keys loaded.
func (v *Verifier) Keys() int { return len(v.keys) }

// header is a token's JOSE header, as far as it matters here.
type header struct {
	Alg  string         `json:"alg"`
	Kid  string         `json:"kid"`
	Crit jsontext.Value `json:"crit"`
}

// Verify checks token and returns the identity it names. Its error wraps
// ErrMissing, ErrInvalid, ErrExpired, ErrNotYet or ErrAudience, and says
// what is wrong (never with the token's text).
//
// The signature is checked by the pinned algorithm's jwt.SigningMethod and
// the registered claims by jwt.Validator; the header and claims are
// decoded strictly (a key given twice, a wrong type or invalid UTF-8 is an
// error) with go-json-experiment, which costs a connect a fifth of what
// jwt.Parser's encoding/json did (its reflection grew the executor's
// stacks on most handshakes).
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissing
	}
	if len(token) > MaxTokenLength {
		return Identity{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxTokenLength)
	}
	c, err := v.verify(token)
	switch {
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	default:
		err = v.validator.Validate(c)
	}
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return Identity{}, fmt.Errorf("%w: %v", ErrNotYet, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenInvalidIssuer),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.ExpiresAt != nil: // exp is there: aud or iss is not
		return Identity{}, fmt.Errorf("%w: %v", ErrAudience, err)
	default:
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	id := Identity{User: c.Subject, Nick: c.Nick, Rooms: c.Rooms, Say: c.Say, Moderate: c.Moderate, Expires: c.ExpiresAt.Time}
	if err := id.check(); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return id, nil
}

// verify checks token's signature with a key pinned to its alg and
// returns its claims, not yet validated.
func (v *Verifier) verify(token string) (*Claims, error) {
	h, rest, ok1 := strings.Cut(token, ".")
	p, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, errors.New("token is malformed: want three segments")
	}
	hb, err := v.parser.DecodeSegment(h)
	if err != nil {
		return nil, fmt.Errorf("token is malformed: header: %v", err)
	}
	var hdr header
	if err := jsonv2.Unmarshal(hb, &hdr); err != nil {
		return nil, fmt.Errorf("token is malformed: header: %v", err)
	}
	if hdr.Crit != nil {
		return nil, errors.New(`token is unverifiable: "crit" extensions are not supported`) // RFC 7515 4.1.11
	}
	if !slices.Contains(v.methods, hdr.Alg) {
		return nil, fmt.Errorf("signing method %q is not allowed: the keys are pinned to %s", hdr.Alg, strings.Join(v.methods, ", "))
	}
	m := jwt.GetSigningMethod(hdr.Alg)
	sb, err := v.parser.DecodeSegment(sig)
	if err != nil {
		return nil, fmt.Errorf("token is malformed: signature: %v", err)
	}
	signed := token[:len(h)+1+len(p)]
	verified, found := false, false
	for _, k := range v.keys {
		if k.alg != hdr.Alg || hdr.Kid != "" && k.id != hdr.Kid {
			continue
		}
		found = true
		if m.Verify(signed, sb, k.k) == nil {
			verified = true
			break
		}
	}
	switch {
	case !found && hdr.Kid != "":
		return nil, fmt.Errorf("token is unverifiable: no %s key with kid %q", hdr.Alg, hdr.Kid)
	case !verified:
		return nil, errors.New("token signature is invalid")
	}
	pb, err := v.parser.DecodeSegment(p)
	if err != nil {
		return nil, fmt.Errorf("token is malformed: claims: %v", err)
	}
	var c Claims
	if err := jsonv2.Unmarshal(pb, &c); err != nil {
		return nil, fmt.Errorf("token is malformed: claims: %v", err)
	}
	return &c, nil
}

// check validates the claims a signature cannot vouch for the shape of.
func (id *Identity) check() error {
	switch {
	case id.User == "":
		return errors.New(`no "sub" claim`)
	case len(id.User) > MaxUserLength:
		return fmt.Errorf(`"sub" longer than %d bytes`, MaxUserLength)
	case !printable(id.User):
		return errors.New(`"sub" holds a control character`)
	case len(id.Rooms) > MaxRoomClaims || len(id.Say) > MaxRoomClaims || len(id.Moderate) > MaxRoomClaims:
		return fmt.Errorf(`more than %d "rooms", "say" or "moderate" entries`, MaxRoomClaims)
	}
	return nil
}

func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) })
}

func loadSecret(kf KeyFile) (key, error) {
	b, err := os.ReadFile(kf.Path)
	if err != nil {
		return key{}, fmt.Errorf("auth: HMAC secret: %w", err)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	alg := kf.Alg
	if alg == "" {
		alg = "HS256"
	}
	if algs[alg] != "hmac" {
		return key{}, fmt.Errorf("auth: HMAC secret %s: algorithm %q is not HS256, HS384 or HS512", kf.Path, alg)
	}
	if len(b) < minSecret(alg) {
		return key{}, fmt.Errorf("auth: HMAC secret %s: %d bytes, want at least %d for %s", kf.Path, len(b), minSecret(alg), alg)
	}
	return key{id: kf.ID, alg: alg, k: b}, nil
}

func loadPublicKey(kf KeyFile) (key, error) {
	b, err := os.ReadFile(kf.Path)
	if err != nil {
		return key{}, fmt.Errorf("auth: public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return key{}, fmt.Errorf("auth: public key %s: no PEM block", kf.Path)
	}
	var pub any
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return key{}, fmt.Errorf("auth: public key %s: PEM block %q is not a public key (a private key must not be given)", kf.Path, blk.Type)
	}
	if err != nil {
		return key{}, fmt.Errorf("auth: public key %s: %w", kf.Path, err)
	}
	k, err := pinned(pub, kf.Alg)
	if err != nil {
		return key{}, fmt.Errorf("auth: public key %s: %w", kf.Path, err)
	}
	k.id = kf.ID
	return k, nil
}

// pinned pins pub to alg, or to its type's default when alg is "", and
// refuses an algorithm of another key type.
func pinned(pub any, alg string) (key, error) {
	var kind, def string
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return key{}, fmt.Errorf("RSA key of %d bits, want at least 2048", p.N.BitLen())
		}
		kind, def = "rsa", "RS256"
	case *ecdsa.PublicKey:
		kind = "ecdsa"
		switch p.Curve {
		case elliptic.P256():
			def = "ES256"
		case elliptic.P384():
			def = "ES384"
		case elliptic.P521():
			def = "ES512"
		default:
			return key{}, errors.New("ECDSA key on an unsupported curve")
		}
		if alg != "" && alg != def {
			return key{}, fmt.Errorf("algorithm %q does not match the key's curve (%s)", alg, def)
		}
	case ed25519.PublicKey:
		kind, def = "ed25519", "EdDSA"
	default:
		return key{}, fmt.Errorf("unsupported key type %T", pub)
	}
	if alg == "" {
		alg = def
	}
	if algs[alg] != kind {
		return key{}, fmt.Errorf("algorithm %q does not fit a %s key", alg, kind)
	}
	return key{alg: alg, k: pub}, nil
}

// Matches reports whether room is named by one of patterns: a name, or a
// prefix ending in '*' ("team-*"; "*" alone names every room).
func Matches(patterns []string, room string) bool {
	for _, p := range patterns {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(room, pre) || p == room {
			return true
		}
	}
	return false
}
