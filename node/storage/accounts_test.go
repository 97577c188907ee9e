package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"hearth/node/storage"
)

func openAccounts(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(storage.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUserData(); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateAccounts(); err != nil {
		t.Fatal(err)
	}
	return db
}

// An alias reserved by a createRoom that never finished (the process died)
// is free again after a restart, while finished aliases stay.
func TestAliasReservationAfterCrash(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	db := openAccounts(t, path)
	if err := db.ReserveRoomAlias(ctx, "#held:x", "@a:x"); err != nil {
		t.Fatal(err)
	}
	if err := db.ReserveRoomAlias(ctx, "#held:x", "@b:x"); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second reservation: %v", err)
	}
	if _, _, err := db.RoomAlias(ctx, "#held:x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a reserved alias must not resolve: %v", err)
	}
	if err := db.CreateRoomAlias(ctx, "#done:x", "!r:x", "@a:x"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openAccounts(t, path)
	defer db.Close()
	if err := db.ReserveRoomAlias(ctx, "#held:x", "@b:x"); err != nil {
		t.Fatalf("stale reservation not dropped: %v", err)
	}
	if room, creator, err := db.RoomAlias(ctx, "#done:x"); err != nil || room != "!r:x" || creator != "@a:x" {
		t.Fatalf("finished alias: %q %q %v", room, creator, err)
	}
}

func TestAccountsDevicesKeys(t *testing.T) {
	ctx := context.Background()
	db := openAccounts(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	acct := storage.NewAccount{UserID: "@a:x", PasswordHash: "h", DisplayName: "A", PushRules: []byte(`{}`),
		Device: &storage.NewDevice{DeviceID: "D1", TokenHash: "t1"}}
	pos, err := db.CreateAccount(ctx, acct)
	if err != nil || pos == 0 {
		t.Fatalf("create account: %d %v", pos, err)
	}
	acct.Device = &storage.NewDevice{DeviceID: "D9", TokenHash: "t9"}
	if _, err := db.CreateAccount(ctx, acct); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("duplicate account: %v", err)
	}
	// The refused registration left no device behind.
	if _, err := db.DeviceByToken(ctx, "t9"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("device of a refused registration: %v", err)
	}
	old, err := db.CreateDevice(ctx, "@a:x", storage.NewDevice{DeviceID: "D1", TokenHash: "t2"})
	if err != nil || old != "t1" {
		t.Fatalf("re-key device: %q %v", old, err)
	}
	if d, err := db.DeviceByToken(ctx, "t2"); err != nil || d.DeviceID != "D1" {
		t.Fatalf("device by token: %+v %v", d, err)
	}

	counts, err := db.PutDeviceKeys(ctx, "@a:x", "D1", []byte(`{"k":1}`),
		[]storage.OneTimeKey{{KeyID: "c:1", Algorithm: "c", Key: []byte(`"1"`)}},
		[]storage.OneTimeKey{{KeyID: "c:fb", Algorithm: "c", Key: []byte(`"fb"`)}})
	if err != nil || counts["c"] != 1 {
		t.Fatalf("put keys: %v %v", counts, err)
	}
	for _, want := range []string{"c:1", "c:fb", "c:fb"} {
		k, err := db.ClaimOneTimeKey(ctx, "@a:x", "D1", "c")
		if err != nil || k.KeyID != want {
			t.Fatalf("claim: want %s, got %+v %v", want, k, err)
		}
	}
	gone, err := db.DeleteDevices(ctx, "@a:x", nil)
	if err != nil || len(gone) != 1 || gone[0] != "t2" {
		t.Fatalf("delete devices: %v %v", gone, err)
	}
	if keys, err := db.DeviceKeys(ctx, "@a:x", nil); err != nil || len(keys) != 0 {
		t.Fatalf("keys outlived their device: %v %v", keys, err)
	}
}
