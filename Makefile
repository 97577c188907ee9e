# Hearth: build, run and test.
#
#   make run     build everything and start bin/hearth on http://127.0.0.1:8008
#   make test    everything CI runs (installs the npm packages the tests need)
#   make bench   Go benchmarks, then the load tool against a fresh node
#   make lint    gofmt, go vet, staticcheck
#
# Variables: DATA, HTTP and ARGS for `make run`; BENCH_ARGS for `make bench`;
# GO to use another go binary.

GO          ?= go
DATA        ?= ./data
HTTP        ?= 127.0.0.1:8008
ARGS        ?=
BENCH_ARGS  ?=
GOROOT      := $(shell $(GO) env GOROOT)
# staticcheck 2026.1 understands Go 1.26; newer ones are fine once pinned
# here (the module proxy refuses @latest for some modules).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
# Go source dirs (gofmt must not wander into web/node_modules).
GO_DIRS     := cmd node p2p wasm web
# The packages whose tests also run under the race detector: the ones with
# concurrent writers, workers and long-polls. Race-instrumenting the whole
# tree (SQLite is Go code here) costs CI minutes for little.
RACE_PKGS   := ./node/storage/... ./node/roomserver/... ./node/syncapi/...
WASM_OUT    := web/app/hearth.wasm
NPM_STAMP   := web/node_modules/.package-lock.json

.PHONY: all build wasm web run test bench lint clean \
	test-vet test-fmt test-staticcheck test-go test-race test-wasm test-js

all: build

## build: bin/hearth and bin/hearth-bench
build:
	$(GO) build -trimpath -o bin/hearth ./cmd/hearth
	$(GO) build -trimpath -o bin/hearth-bench ./cmd/hearth-bench

## wasm: the browser node (web/app/hearth.wasm, with .gz and .br beside it), embedded by bin/hearth
# HEARTH_BROTLI_QUALITY=5 makes the brotli step quick (and the file larger).
wasm:
	GOOS=js GOARCH=wasm $(GO) build ./node/...
	GOOS=js GOARCH=wasm $(GO) build -trimpath -ldflags='-s -w' -o $(WASM_OUT) ./wasm
	node web/compress.mjs $(WASM_OUT)

## web: the web app's build output: Go's wasm loader, and the app bundled with matrix-js-sdk
web: $(NPM_STAMP)
	cp "$(GOROOT)/lib/wasm/wasm_exec.js" web/app/wasm_exec.js
	cd web && ./node_modules/.bin/esbuild app/src/app.js --bundle --format=esm --minify \
		--target=es2022 --log-level=warning --outfile=app/dist/app.js

## run: build everything (the web app is embedded, so it comes first) and start the node
run:
	$(MAKE) wasm web
	$(MAKE) build
	./bin/hearth --data $(DATA) --http $(HTTP) $(ARGS)

# npm packages for the JavaScript tests, from the committed lockfile;
# reinstalled when the lockfile changes.
$(NPM_STAMP): web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund
	touch $@

## test: vet, gofmt, staticcheck, Go tests (some under -race), the wasm build and its smoke run, the JS tests
# Every step runs even if an earlier one fails (make -k), so one run shows
# all failures; the exit status is still non-zero if any failed.
test: $(NPM_STAMP)
	$(MAKE) -k test-vet test-fmt test-staticcheck test-go test-race test-wasm test-js

test-vet:
	$(GO) vet ./...

test-fmt:
	@out="$$(gofmt -l $(GO_DIRS))"; if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi

# ~1.5 min on a cold cache (it builds itself and analyses the dependencies),
# ~10 s warm.
test-staticcheck:
	$(GO) run $(STATICCHECK) ./...

test-go:
	$(GO) test -timeout 15m ./...

test-race:
	$(GO) test -race -timeout 15m $(RACE_PKGS)

# Builds the browser entry point and runs it under Node: the core starts
# inside js/wasm and registers, creates a room, sends and reads back through
# its own handler — it runs there, not only compiles.
test-wasm: wasm web
	node "$(GOROOT)/lib/wasm/wasm_exec_node.js" $(WASM_OUT)
	GOOS=js GOARCH=wasm $(GO) vet ./wasm/... ./p2p/...
	PATH="$(GOROOT)/lib/wasm:$$PATH" GOOS=js GOARCH=wasm $(GO) test ./wasm/ ./wasm/opfs/

# Test files are web/test/**/*.test.mjs, named explicitly: given a directory,
# Node 20 would also run every other .js file under test/ (pages, workers).
# --test-force-exit: matrix-js-sdk leaves a 110 s timer per /sync request
# behind after stopClient(); without it each file would linger that long.
JS_TESTS = $(shell find web/test -name '*.test.mjs' | sort)

test-js: wasm web build $(NPM_STAMP)
	HEARTH_BIN="$(CURDIR)/bin/hearth" node --test --test-force-exit $(JS_TESTS)

## bench: Go benchmarks, then hearth-bench against a node it starts on a temp dir and a free port
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 20m ./...
	./bin/hearth-bench --spawn --hearth ./bin/hearth $(BENCH_ARGS)

## lint: gofmt, go vet, staticcheck
lint: test-fmt test-vet test-staticcheck

clean:
	rm -rf bin $(WASM_OUT) $(WASM_OUT).gz $(WASM_OUT).br web/app/wasm_exec.js web/app/dist
