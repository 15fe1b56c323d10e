package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// staticFile is one file of the document root, read once at New.
type staticFile struct {
	body        []byte
	contentType string
	etag        string
	length      string
}

// staticRoot serves a read-only document root. Every file is read at New,
// so a request is a map lookup: only the exact paths of files (and
// directories with an index.html) exist, and no request path can reach
// outside the root, however it is encoded.
type staticRoot struct {
	files map[string]*staticFile // by URL path
}

// contentTypes covers the types a chat page uses, so the answer does not
// depend on the host's mime.types.
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".json":        "application/json",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".txt":         "text/plain; charset=utf-8",
	".woff2":       "font/woff2",
	".webmanifest": "application/manifest+json",
}

func newStaticRoot(fsys fs.FS) (*staticRoot, error) {
	root := &staticRoot{files: make(map[string]*staticFile)}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := contentTypes[path.Ext(p)]
		if ct == "" {
			ct = mime.TypeByExtension(path.Ext(p))
		}
		if ct == "" {
			ct = http.DetectContentType(body)
		}
		f := &staticFile{
			body:        body,
			contentType: ct,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
			length:      strconv.Itoa(len(body)),
		}
		urlPath := "/" + p
		root.files[urlPath] = f
		if path.Base(p) == "index.html" {
			root.files[strings.TrimSuffix(urlPath, "index.html")] = f
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read document root: %w", err)
	}
	return root, nil
}

func (root *staticRoot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := root.files[r.URL.Path]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: the ETag makes that a 304
	if etagMatch(r.Header.Get("If-None-Match"), f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Content-Length", f.length)
	h.Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(f.contentType, "text/html") {
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'")
		h.Set("X-Frame-Options", "DENY")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(f.body)
	}
}

// etagMatch implements If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
