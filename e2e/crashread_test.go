package e2e

import (
	"context"
	"crypto/hpke"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// crashService is the credential the crash test's readers read.
const crashService = "crashsvc"

// gotRead is one read a reader was answered: the value it opened and the wall
// clock just before the request left and just after the answer was opened.
type gotRead struct {
	version     int
	value       string
	sent, recvd int64 // unix nanos
	round       int
}

// crashReader reads one credential through one session, one read at a time, so
// the windows [sent, recvd] of its reads never overlap.
type crashReader struct {
	name  string
	sid   string
	read  func(ctx context.Context) (version int, value []byte, err error)
	mu    sync.Mutex
	reads []gotRead
}

// crashReads is the owner and agent side of the crash test: an owner who stores
// a new version of crashService each round, and readers (the owner's session,
// and its paired agent's) that read it over the real binary's HTTP API while
// the broker is killed.
type crashReads struct {
	h       *harness
	owner   akOwner
	session *home.Session
	mu      sync.Mutex
	values  map[int]string // version → the value stored at it
	readers []*crashReader
}

func newCrashReads(h *harness, s *server) *crashReads {
	h.t.Helper()
	c := &crashReads{h: h, owner: h.akNewOwner(s), values: map[int]string{}}
	sess, err := home.Dir(c.owner.home).Session()
	if err != nil {
		h.t.Fatal(err)
	}
	c.session = sess
	h.plant("owner session token", sess.Token)
	c.storeNext(s)
	dh := h.pairAgent(s, c.owner, "crashbot", crashService)

	// The owner reads with a one-time HPKE key of its own, as `agentkeys read` does.
	hk, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		h.t.Fatal(err)
	}
	pub := hk.PublicKey().Bytes()
	c.readers = append(c.readers, &crashReader{name: "owner", sid: sess.SID,
		read: func(ctx context.Context) (int, []byte, error) {
			cl, err := client.New(c.session.Server)
			if err != nil {
				return 0, nil, err
			}
			res, err := cl.WithToken(c.session.Token).Read(ctx, crashService, apiv1.ReadBody{Recipient: pub})
			if err != nil {
				return 0, nil, err
			}
			v, err := hpke.Open(hk, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(res.Info), res.Sealed)
			return res.Version, v, err
		}})

	// The agent reads as its daemon does: a DPoP-bound token, the session channel.
	ds, err := daemon.DirOf(dh).LoadSession()
	if err != nil {
		h.t.Fatal(err)
	}
	key, err := daemon.DecodeKey(ds.ProofKey)
	if err != nil {
		h.t.Fatal(err)
	}
	ch, err := base64.StdEncoding.DecodeString(ds.ChannelKey)
	if err != nil {
		h.t.Fatal(err)
	}
	c.readers = append(c.readers, &crashReader{name: "agent", sid: ds.SID,
		read: func(ctx context.Context) (int, []byte, error) {
			cl, err := client.New(ds.Server)
			if err != nil {
				return 0, nil, err
			}
			res, err := cl.WithAgent(ds.Token, key).Read(ctx, crashService)
			if err != nil {
				return 0, nil, err
			}
			v, err := seal.OpenBox(ch, []byte(res.Info), res.Sealed)
			return res.Version, v, err
		}})
	return c
}

// storeNext stores a new value of crashService through the CLI and records it
// under the version the broker gave it.
func (c *crashReads) storeNext(s *server) {
	c.h.t.Helper()
	secret := "crash-" + randomHex(16)
	c.h.akStore(c.owner, crashService, secret)
	cl, err := client.New(s.url)
	if err != nil {
		c.h.t.Fatal(err)
	}
	list, err := cl.WithToken(c.session.Token).List(context.Background())
	if err != nil {
		c.h.t.Fatal(err)
	}
	for _, cr := range list {
		if cr.Service == crashService && cr.Agent == apiv1.OwnerWide {
			c.mu.Lock()
			defer c.mu.Unlock()
			if _, dup := c.values[cr.Version]; dup {
				c.h.t.Fatalf("store answered, but %s is still at version %d", crashService, cr.Version)
			}
			c.values[cr.Version] = secret
			return
		}
	}
	c.h.t.Fatalf("%s is not listed after it was stored: %+v", crashService, list)
}

// runningReads is one round of readers.
type runningReads struct {
	wg       sync.WaitGroup
	halted   atomic.Bool
	inFlight atomic.Int32
	answered atomic.Int32
}

// start starts every reader; each reads until halted and the server fails it.
// An error or a wrong value while the server is up is a test error.
func (c *crashReads) start(round int) *runningReads {
	t := c.h.t
	rr := &runningReads{}
	for _, r := range c.readers {
		rr.wg.Go(func() {
			for !rr.halted.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
				rr.inFlight.Add(1)
				sent := time.Now().UnixNano()
				version, value, err := r.read(ctx)
				recvd := time.Now().UnixNano()
				rr.inFlight.Add(-1)
				cancel()
				if err != nil {
					if !rr.halted.Load() {
						t.Errorf("round %d: %s read while the server was up: %v", round, r.name, err)
					}
					return
				}
				c.mu.Lock()
				want, known := c.values[version]
				c.mu.Unlock()
				if !known || string(value) != want {
					t.Errorf("round %d: %s read version %d and got other bytes than were stored at it", round, r.name, version)
					return
				}
				r.mu.Lock()
				r.reads = append(r.reads, gotRead{version: version, value: string(value), sent: sent, recvd: recvd, round: round})
				r.mu.Unlock()
				rr.answered.Add(1)
				// A pause between reads leaves the governance writers, who rebuild
				// their entry whenever the head moves, room to land theirs.
				time.Sleep(time.Duration(2+rand.IntN(15)) * time.Millisecond)
			}
		})
	}
	return rr
}

// halt tells the readers to stop and reports whether a read was in flight.
func (rr *runningReads) halt() bool {
	rr.halted.Store(true)
	return rr.inFlight.Load() > 0
}

// wait waits for the readers and returns how many reads were answered.
func (rr *runningReads) wait() int {
	rr.wg.Wait()
	return int(rr.answered.Load())
}

// auditedRead is a durable credential.read entry.
type auditedRead struct {
	seq  uint64
	time int64
	read vault.Read
}

// checkAudited reads the ledger the stopped server left in the store and checks
// that every read a reader was answered has exactly one durable credential.read
// entry: same session, service and version, appended between the moment the
// request left and the moment the answer was opened. A broker that answered a
// read before its audit entry was durable fails here whenever the kill lands
// between the answer and the commit: the read is in a reader's log, its entry
// is not on disk.
func (c *crashReads) checkAudited(store string) (reads int) {
	t := c.h.t
	t.Helper()
	src, err := ledgerstore.Parse(store)
	if err != nil {
		t.Fatal(err)
	}
	d, err := src.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	bySID := map[string][]auditedRead{}
	for from := uint64(0); ; {
		es, err := d.Entries(context.Background(), from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			from = e.Seq + 1
			if e.Kind != vault.KindRead {
				continue
			}
			var r vault.Read
			if err := json.Unmarshal(e.Payload, &r); err != nil {
				t.Fatalf("credential.read at seq %d: %v", e.Seq, err)
			}
			bySID[r.SID] = append(bySID[r.SID], auditedRead{e.Seq, e.Time, r})
		}
		if len(es) < 1000 {
			break
		}
	}
	for _, r := range c.readers {
		audited := bySID[r.sid]
		sort.Slice(audited, func(i, j int) bool { return audited[i].time < audited[j].time })
		if len(r.reads) == 0 {
			t.Errorf("the %s reader was never answered: the test proves nothing about it", r.name)
		}
		for _, g := range r.reads {
			lo := sort.Search(len(audited), func(i int) bool { return audited[i].time >= g.sent })
			var match []uint64
			for _, a := range audited[lo:] {
				if a.time > g.recvd {
					break
				}
				if a.read.Service == crashService && a.read.Version == g.version {
					match = append(match, a.seq)
				}
			}
			switch {
			case len(match) == 0:
				t.Errorf("round %d: the %s reader got version %d of %s, but no durable credential.read entry "+
					"of its session was appended while it waited (the read was answered before its audit entry was durable)",
					g.round, r.name, g.version, crashService)
			case len(match) > 1:
				t.Errorf("round %d: one %s read has %d credential.read entries (seqs %v)", g.round, r.name, len(match), match)
			}
		}
		reads += len(r.reads)
	}
	return reads
}
