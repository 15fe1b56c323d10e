// Package static holds Parley's browser chat page (index.html, app.js,
// style.css: plain JavaScript, no build step), embedded in the binary so the
// server needs no files at run time. engine serves it as the document root.
package static

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js style.css
var files embed.FS

// FS returns the page's files, rooted at the document root (index.html at
// the top).
func FS() fs.FS { return files }
