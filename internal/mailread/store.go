package mailread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// StoreSource reads one inbox prefix of an object store: the messages the
// edge wrote there, and the daemon's manifest of marks beside them.
//
// The manifest is a series of immutable objects <prefix>manifest/<20-digit
// version>.json: a write puts version N+1 only if absent (blobstore's
// put-if-absent), so two daemons marking at once never lose a mark (the loser
// reads the winner's version and puts its change on top), and a reader always
// sees a whole version. Versions older than the newest are deleted after a
// write; a version put after a newer one exists is stale, deleted, and the
// change is put again on top.
type StoreSource struct {
	Store  blobstore.Store
	Prefix string // Prefix(wallet, address)
}

var _ Source = (*StoreSource)(nil)

const manifestDir = "manifest/"

// maxManifest bounds the manifest's size (about 40,000 marked messages).
const maxManifest = 4 << 20

// manifest is one version of the marks.
type manifest struct {
	Version  uint64          `json:"version"`
	Messages map[string]Mark `json:"messages"`
}

// storeError maps a driver error to the daemon's codes: the object store
// refusing the daemon's own credentials is DENIED.
func storeError(err error, what string) error {
	var ae smithy.APIError
	var ne net.Error
	switch {
	case errors.Is(err, blobstore.ErrNotFound):
		return problem.Newf(problem.NotFound, "pass an id that email_list returned", "no message %s in this inbox", what)
	case errors.As(err, &ae) && (ae.ErrorCode() == "AccessDenied" || ae.ErrorCode() == "Forbidden" || ae.ErrorCode() == "InvalidAccessKeyId"):
		return problem.Newf(problem.Denied, "check that the daemon's mail config names its own inbox and that the bucket policy is the one agentkeys mail aws-setup printed",
			"the object store refused %s: %s", what, ae.ErrorCode())
	case errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded):
		return problem.Wrap(err, problem.Unreachable, "check the network and the object store endpoint in the daemon's mail config", "cannot reach the object store for %s", what)
	case problem.As(err).Code != problem.Internal:
		return err
	}
	return problem.Wrap(err, problem.Unreachable, "retry; if it persists, check the object store", "reading %s from the object store failed", what)
}

// List implements Source.
func (s *StoreSource) List(ctx context.Context, since time.Time, limit int) ([]Ref, bool, error) {
	limit, err := CheckLimit(limit)
	if err != nil {
		return nil, false, err
	}
	after := ""
	if n := since.UnixNano(); !since.IsZero() && n > 0 {
		after = s.Prefix + fmt.Sprintf("%019d", n-1) + "~" // after every key of n-1, before every key of n
	}
	var refs []Ref
	for {
		objs, more, err := s.Store.List(ctx, s.Prefix, after, blobstore.MaxList)
		if err != nil {
			return nil, false, storeError(err, "the inbox listing")
		}
		for _, o := range objs {
			after = o.Key
			id, at, ok := ParseMessageKey(s.Prefix, o.Key)
			if !ok {
				continue
			}
			if len(refs) == limit {
				return refs, true, nil
			}
			refs = append(refs, Ref{ID: id, Received: at, Size: o.Size})
		}
		// keys sort by arrival; the manifest ("m…") after every message
		if !more || len(objs) == 0 || strings.HasPrefix(after, s.Prefix+manifestDir) {
			return refs, false, nil
		}
	}
}

// Get implements Source.
func (s *StoreSource) Get(ctx context.Context, id string) ([]byte, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	b, err := s.Store.Get(ctx, MessageKey(s.Prefix, id))
	if err != nil {
		return nil, storeError(err, id)
	}
	return b, nil
}

// latest returns the newest manifest version (version 0 and no marks when
// there is none) and the keys of every version.
func (s *StoreSource) latest(ctx context.Context) (*manifest, []string, error) {
	for attempt := 0; ; attempt++ {
		var keys []string
		after := ""
		for {
			objs, more, err := s.Store.List(ctx, s.Prefix+manifestDir, after, blobstore.MaxList)
			if err != nil {
				return nil, nil, storeError(err, "the manifest")
			}
			for _, o := range objs {
				keys = append(keys, o.Key)
				after = o.Key
			}
			if !more || len(objs) == 0 {
				break
			}
		}
		m := &manifest{Messages: map[string]Mark{}}
		if len(keys) == 0 {
			return m, nil, nil
		}
		newest := keys[len(keys)-1]
		b, err := s.Store.Get(ctx, newest)
		if errors.Is(err, blobstore.ErrNotFound) && attempt < 3 {
			continue // pruned by a newer write between the list and the get
		}
		if err != nil {
			return nil, nil, storeError(err, "the manifest")
		}
		if len(b) > maxManifest || json.Unmarshal(b, m) != nil || m.Version != manifestVersion(s.Prefix, newest) {
			return nil, nil, problem.Newf(problem.Unreachable, "delete the damaged object; the marks start again from the version before it",
				"the inbox manifest %s is damaged", newest)
		}
		if m.Messages == nil {
			m.Messages = map[string]Mark{}
		}
		return m, keys, nil
	}
}

func (s *StoreSource) manifestKey(v uint64) string {
	return s.Prefix + manifestDir + fmt.Sprintf("%020d", v) + ".json"
}

// manifestVersion is the version a manifest key names (0 if none).
func manifestVersion(prefix, key string) uint64 {
	name := strings.TrimSuffix(strings.TrimPrefix(key, prefix+manifestDir), ".json")
	v, _ := strconv.ParseUint(name, 10, 64)
	return v
}

// Marks implements Source.
func (s *StoreSource) Marks(ctx context.Context, ids []string) (map[string]Mark, error) {
	m, _, err := s.latest(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]Mark{}
	for _, id := range ids {
		if mk, ok := m.Messages[id]; ok {
			out[id] = mk
		}
	}
	return out, nil
}

// SetMark implements Source: it marks only a message that is in the inbox.
func (s *StoreSource) SetMark(ctx context.Context, id string, mk Mark) error {
	if err := CheckID(id); err != nil {
		return err
	}
	if err := CheckMark(mk); err != nil {
		return err
	}
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	for range 16 {
		m, keys, err := s.latest(ctx)
		if err != nil {
			return err
		}
		next := manifest{Version: m.Version + 1, Messages: maps.Clone(m.Messages)}
		if mk.Zero() {
			delete(next.Messages, id)
		} else {
			next.Messages[id] = mk
		}
		b, _ := json.Marshal(next)
		if len(b) > maxManifest {
			return problem.New(problem.BadRequest, "the inbox manifest is full", "clear the marks of old messages (email_mark with seen false and no labels)")
		}
		err = s.Store.PutIfAbsent(ctx, s.manifestKey(next.Version), b)
		if errors.Is(err, blobstore.ErrExists) {
			continue // another writer's version: put this change on top of it
		}
		if err != nil {
			return storeError(err, "the manifest")
		}
		// A writer that read an old version may find its successor's key free
		// again (pruned after a newer one was written): then a newer version
		// exists and this one is stale. Put the change again on top.
		_, after, err := s.latest(ctx)
		if err != nil {
			return err
		}
		if len(after) == 0 || manifestVersion(s.Prefix, after[len(after)-1]) > next.Version {
			s.Store.Delete(ctx, s.manifestKey(next.Version))
			continue
		}
		for _, k := range keys { // the older versions; a failure leaves garbage, not damage
			s.Store.Delete(ctx, k)
		}
		return nil
	}
	return problem.New(problem.Conflict, "retry", "the inbox manifest changed under every attempt to write it")
}

// Close implements Source.
func (s *StoreSource) Close() error { return nil }
