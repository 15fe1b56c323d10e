package engine_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/parleyhq/parley/engine"
)

func TestRoutesAndStaticRoot(t *testing.T) {
	t.Parallel()
	root := fstest.MapFS{
		"index.html":     {Data: []byte("<!doctype html><title>chat</title>")},
		"app.js":         {Data: []byte("console.log(1)")},
		"style.css":      {Data: []byte("body{}")},
		"sub/index.html": {Data: []byte("sub")},
	}
	srv, _ := start(t, engine.Config{Root: root}, newRecorder(), func(s *engine.Server) {
		_ = s.Handle("/test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, "<h1>It works!</h1>")
		}))
		for _, p := range []string{"/api/", "/api/v2/"} {
			_ = s.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, p+" "+r.URL.Path)
			}))
		}
	})
	addr := srv.Addr().String()
	get := func(method, path string, hdr ...string) (*http.Response, string) {
		req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", method, path, addr, strings.Join(hdr, ""))
		return rawHTTP(t, addr, req)
	}

	if resp, body := get("GET", "/test"); resp.StatusCode != 200 || body != "<h1>It works!</h1>" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/test: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	// A route ending in / takes its subtree; the longest one wins.
	for path, want := range map[string]string{"/api/": "/api/ /api/", "/api/v1/stats": "/api/ /api/v1/stats",
		"/api/v2/x": "/api/v2/ /api/v2/x"} {
		if resp, body := get("GET", path); resp.StatusCode != 200 || body != want {
			t.Errorf("GET %s: %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}
	if resp, _ := get("GET", "/api"); resp.StatusCode != 404 {
		t.Errorf("GET /api: %d, want 404 (the subtree is /api/...)", resp.StatusCode)
	}

	for _, tc := range []struct{ path, ctype, body string }{
		{"/", "text/html; charset=utf-8", "<!doctype html><title>chat</title>"},
		{"/index.html", "text/html; charset=utf-8", "<!doctype html><title>chat</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "console.log(1)"},
		{"/style.css", "text/css; charset=utf-8", "body{}"},
		{"/sub/", "text/html; charset=utf-8", "sub"},
	} {
		resp, body := get("GET", tc.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype || body != tc.body {
			t.Errorf("GET %s: %d %q %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tc.path)
			continue
		}
		if r, b := get("GET", tc.path, "If-None-Match: "+etag+"\r\n"); r.StatusCode != 304 || b != "" {
			t.Errorf("GET %s with If-None-Match: %d %q, want 304 and no body", tc.path, r.StatusCode, b)
		}
		if r, _ := get("GET", tc.path, "If-None-Match: W/"+etag+", \"other\"\r\n"); r.StatusCode != 304 {
			t.Errorf("GET %s with a weak If-None-Match list: %d, want 304", tc.path, r.StatusCode)
		}
		if r, _ := get("GET", tc.path, "If-None-Match: \"stale\"\r\n"); r.StatusCode != 200 {
			t.Errorf("GET %s with a stale ETag: %d, want 200", tc.path, r.StatusCode)
		}
		if r, b := get("HEAD", tc.path); r.StatusCode != 200 || b != "" ||
			r.Header.Get("Content-Length") != fmt.Sprint(len(tc.body)) || r.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("HEAD %s: %d len %q type %q body %q", tc.path, r.StatusCode,
				r.Header.Get("Content-Length"), r.Header.Get("Content-Type"), b)
		}
	}
	if r, _ := get("POST", "/app.js", "Content-Length: 0\r\n"); r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /app.js: %d Allow %q", r.StatusCode, r.Header.Get("Allow"))
	}

	// Nothing outside the root, however the path is spelled. The request
	// line is sent as is: nbhttp decodes it, the root only knows its files.
	for _, p := range []string{
		"/missing.html", "/../engine.go", "/..%2fengine.go", "/%2e%2e/engine.go", "/sub/../../engine.go",
		"/sub/..%2f..%2fengine.go", "/%2e%2e%2f%2e%2e%2fetc/passwd", "/..\\engine.go", "/sub", "//etc/passwd",
		"/index.html%00.js",
	} {
		resp, body := get("GET", p)
		if resp.StatusCode != 404 && resp.StatusCode != 400 {
			t.Errorf("GET %s: %d %q, want 404 or 400", p, resp.StatusCode, body)
		}
	}
}
