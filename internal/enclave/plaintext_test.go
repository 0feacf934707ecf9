package enclave

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"github.com/agentkeys/agentkeys/internal/seal"
)

// reachableBytes walks every value reachable from v — exported or not, through
// pointers, interfaces, maps, slices, arrays and structs — and reports whether
// any byte sequence (a []byte, a byte array or a string) contains needle.
func reachableBytes(v reflect.Value, needle []byte) bool {
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value) bool
	walk = func(v reflect.Value) bool {
		switch v.Kind() {
		case reflect.Pointer, reflect.UnsafePointer:
			if v.IsNil() {
				return false
			}
			if seen[v.Pointer()] {
				return false
			}
			seen[v.Pointer()] = true
			if v.Kind() == reflect.UnsafePointer {
				return false
			}
			return walk(v.Elem())
		case reflect.Interface:
			return !v.IsNil() && walk(v.Elem())
		case reflect.String:
			return bytes.Contains([]byte(v.String()), needle)
		case reflect.Slice:
			if v.IsNil() {
				return false
			}
			if v.Type().Elem().Kind() == reflect.Uint8 {
				// Read the whole backing array up to cap: bytes past len are
				// just as reachable.
				b := unsafe.Slice((*byte)(v.UnsafePointer()), v.Cap())
				return bytes.Contains(b, needle)
			}
			if seen[v.Pointer()] {
				return false
			}
			seen[v.Pointer()] = true
			for i := range v.Len() {
				if walk(v.Index(i)) {
					return true
				}
			}
		case reflect.Array:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				b := make([]byte, v.Len())
				for i := range b {
					b[i] = byte(v.Index(i).Uint())
				}
				return bytes.Contains(b, needle)
			}
			for i := range v.Len() {
				if walk(v.Index(i)) {
					return true
				}
			}
		case reflect.Map:
			if v.IsNil() || seen[v.Pointer()] {
				return false
			}
			seen[v.Pointer()] = true
			it := v.MapRange()
			for it.Next() {
				if walk(it.Key()) || walk(it.Value()) {
					return true
				}
			}
		case reflect.Struct:
			for i := range v.NumField() {
				if walk(v.Field(i)) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

func TestReachableBytesFindsNested(t *testing.T) {
	secret := []byte("a-planted-secret-0123456789")
	type inner struct{ b []byte }
	type outer struct {
		m map[string]*inner
		a [2]any
	}
	o := &outer{m: map[string]*inner{"k": {b: bytes.Clone(secret)}}}
	if !reachableBytes(reflect.ValueOf(o), secret) {
		t.Fatal("the walker missed a secret in a map of pointers")
	}
	o.m = nil
	o.a[1] = string(secret)
	if !reachableBytes(reflect.ValueOf(o), secret) {
		t.Fatal("the walker missed a secret string in an interface array")
	}
	o.a[1] = nil
	if reachableBytes(reflect.ValueOf(o), secret) {
		t.Fatal("the walker found a secret that is not there")
	}
}

// TestNoPlaintextKeptAfterOperations: after a store check, a session read and a
// re-encryption to a caller key, no plaintext credential is reachable from the
// enclave: no cache holds it once the operation that needed it has returned.
func TestNoPlaintextKeptAfterOperations(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pt := []byte("sk-live-credential-plaintext-7f3a9c2e")
	info := []byte("agentkeys/credential/v1|owner|*|svc")
	ct, err := seal.To(publicBytes(t, e, "shielding/v1"), info, pt)
	if err != nil {
		t.Fatal(err)
	}
	client := mustClientKey(t)
	steps := []struct {
		name string
		run  func() error
	}{
		{"CheckSealed (store)", func() error { return e.CheckSealed("shielding/v1", info, ct) }},
		{"ResealToSession (session read)", func() error {
			_, err := e.ResealToSession("shielding/v1", info, ct, "sid-1", []byte("aad"))
			return err
		}},
		{"Reseal (hpke read)", func() error {
			_, err := e.Reseal("shielding/v1", info, ct, client.PublicKey().Bytes(), []byte("r"))
			return err
		}},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if reachableBytes(reflect.ValueOf(e), pt) {
			t.Errorf("after %s the plaintext credential is still reachable from the enclave", s.name)
		}
	}
	// The reads after the store check were served by the sealed copy, which
	// the walk above has seen.
	if n := e.reads.order.Len(); n != 1 {
		t.Errorf("%d sealed copies after three operations on one ciphertext, want 1", n)
	}
}

// TestPlaintextBufferZeroed: the buffer an operation decrypts into is zeroed
// once the operation returns, whether it succeeded or failed.
func TestPlaintextBufferZeroed(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pt := []byte("sk-live-credential-plaintext-5d1e")
	info := []byte("i")
	ct, err := seal.To(publicBytes(t, e, "shielding/v1"), info, pt)
	if err != nil {
		t.Fatal(err)
	}
	for _, fail := range []bool{false, true} {
		var kept []byte
		err := e.withPlaintext("Test", "shielding/v1", info, ct, func(p []byte) error {
			if !bytes.Equal(p, pt) {
				t.Fatalf("withPlaintext gave %q", p)
			}
			kept = p
			if fail {
				return errFailTest
			}
			return nil
		})
		if (err != nil) != fail {
			t.Fatalf("fail=%v: err %v", fail, err)
		}
		if !bytes.Equal(kept, make([]byte, len(pt))) {
			t.Errorf("fail=%v: the plaintext buffer was not zeroed after the operation", fail)
		}
	}
}

var errFailTest = errors.New("test failure")
