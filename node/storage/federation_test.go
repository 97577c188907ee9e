package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestEphemeralEDUsTrimmedDurableKept(t *testing.T) {
	db, err := Open(Options{Path: filepath.Join(t.TempDir(), "h.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := errors.Join(db.MigrateRooms(), db.MigrateFederation()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := db.EnqueueEDU(ctx, []string{"b"}, []byte(`"room key"`), true, 2); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := db.EnqueueEDU(ctx, []string{"b"}, []byte(fmt.Sprintf(`"typing %d"`, i)), false, 2); err != nil {
			t.Fatal(err)
		}
	}
	_, edus, err := db.PeekQueue(ctx, "b", 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range edus {
		got = append(got, string(e.JSON))
	}
	want := []string{`"room key"`, `"typing 3"`, `"typing 4"`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queue holds %v, want %v", got, want)
	}
}
