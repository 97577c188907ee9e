package storage

import "bytes"

// Event JSON is stored with one recurring string (the node's server name,
// 62 characters that appear four times in most events) replaced by the
// byte 0x01. Valid JSON never holds a raw control character, so the
// substitution cannot collide, and undoing it is one scan. It keeps the
// database about a third smaller than storing the JSON as is.
const compactByte = 0x01

// pack compacts JSON for storage.
func (db *DB) pack(js []byte) []byte {
	if db.compact == nil {
		return js
	}
	return bytes.ReplaceAll(js, db.compact, []byte{compactByte})
}

// Unpack restores JSON read from an events row. It returns js itself when
// there is nothing to restore, so callers must not keep a result that
// points into a database buffer beyond the row.
func (db *DB) Unpack(js []byte) []byte {
	if db.compact == nil || bytes.IndexByte(js, compactByte) < 0 {
		return js
	}
	return bytes.ReplaceAll(js, []byte{compactByte}, db.compact)
}
