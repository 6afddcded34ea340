// Package web holds Palaver's web UI: static files embedded in the gateway
// binary and served at /.
package web

import (
	"embed"
	"net/http"
)

//go:embed index.html app.css app.js protocol.js favicon.svg
var files embed.FS

// Handler serves the UI's files.
func Handler() http.Handler { return http.FileServerFS(files) }
