package localstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/blobstoretest"
)

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		s, err := Open(filepath.Join(t.TempDir(), "objects"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFiles: objects are private files inside the root; temporary files left
// by a crash are not objects.
func TestFiles(t *testing.T) {
	root := filepath.Join(t.TempDir(), "objects")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.PutIfAbsent(ctx, "w/in@x.example/1.eml", []byte("mail")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{root: 0o700 | os.ModeDir, filepath.Join(root, "w"): 0o700 | os.ModeDir,
		filepath.Join(root, "w", "in@x.example", "1.eml"): 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "w", "in@x.example", ".tmp-123"), []byte("ma"), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, more, err := s.List(ctx, "w/", "", 0)
	if err != nil || more || len(objs) != 1 || objs[0].Key != "w/in@x.example/1.eml" {
		t.Fatalf("List: %v %v %v", objs, more, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "w", "in@x.example")); len(ents) != 2 {
		t.Fatalf("a put left files behind: %v", ents)
	}
	if err := s.PutIfAbsent(ctx, "w/in@x.example/1.eml/more", []byte("x")); err == nil {
		t.Fatal("an object was made a directory")
	}
}

// BenchmarkPutIfAbsent: durable 10 KiB puts into one inbox prefix (the mail
// edge's inbound path), with b.N writers' worth of parallelism set by -cpu.
func BenchmarkPutIfAbsent(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 10<<10)
	var n atomic.Int64
	b.SetBytes(int64(len(msg)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.PutIfAbsent(context.Background(), fmt.Sprintf("0xabc/a@x.example/%d.eml", n.Add(1)), msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
