// Package web owns Hearth's web app: the files a browser loads from a native
// node: the page (app/index.html and app/dist/app.js, the built-in client
// bundled with matrix-js-sdk from app/src), the service worker (app/sw.js),
// the node worker glue (app/node-worker.js) and the browser node itself
// (app/hearth.wasm, built from wasm/). bin/hearth embeds them, so one
// binary serves everything.
//
// `make web` and `make wasm` write build output (wasm_exec.js, dist/,
// hearth.wasm and its .gz/.br) into app/ beside the committed sources;
// web/.gitignore keeps it out of git.
// This package must not import any other hearth package.
package web

import (
	"embed"
	"io/fs"
)

//go:embed app
var files embed.FS

// FS returns the web app's files, rooted so that "index.html" is the page.
func FS() fs.FS {
	sub, err := fs.Sub(files, "app")
	if err != nil {
		panic(err) // "app" is a valid path embedded above
	}
	return sub
}
