// Package parleyjs embeds Parley's JavaScript client library (parley.js,
// an ES module: README.md) so that parley serve serves it at /parley.js,
// for pages that import it from the chat server itself. Its tests run the
// library under Node 20 (with the ws package) against real servers.
package parleyjs

import (
	"bytes"
	_ "embed"
	"net/http"
	"time"
)

//go:embed parley.js
var source []byte

// Path is where parley serve serves the library.
const Path = "/parley.js"

// Handler serves parley.js as JavaScript.
func Handler() http.Handler {
	mod := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "parley.js", mod, bytes.NewReader(source))
	})
}
