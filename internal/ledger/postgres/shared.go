package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// What several brokers on one database share besides the ledger: the DPoP
// proofs they accepted (dpop.ReplayStore) and the request limits
// (ratelimit.Limiter), in tables of their own (migration 2). Neither is part
// of the chain: they are not hashed, signed or verified, and losing them (a
// restore) forgets proofs and spent requests, never an entry.
//
// Both are exact across brokers. A proof's row is inserted, or taken over
// once expired, by a statement whose ON CONFLICT row lock lets exactly one of
// concurrent uses win. A limit is decided by agentkeys_allow, which locks the
// key's row first, so concurrent requests for one key are counted one after
// the other, whichever broker they reach.
//
// Concurrent calls through one driver, First calls and Allow calls of every
// rule alike, share one transaction and one round trip (a coalescer, as group
// commit does): one insert for the batch's proofs, one agentkeys_allow_many
// call per rule, answered exactly as the same calls one after the other. A
// request's proof check and limit come one after the other, so two requests
// usually share each round trip, halving the round trips (each one wakes a
// backend and the broker: most of PostgreSQL's CPU per request was that).
//
// Durability: that transaction commits without waiting for its WAL to reach
// the disk (synchronous_commit off, on connections of their own; visible to
// every broker at once, as any commit). A request that appends an entry
// commits the entry afterwards with synchronous_commit on, and PostgreSQL's
// WAL is flushed in order, so its proof and spent request are durable before
// it is answered, as before. Only what a request that appends nothing
// recorded (a refusal, or a query of state) can be lost, and only if
// PostgreSQL itself crashes within its WAL writer's delay (under a second by
// default): after that restart such a proof, still within its lifetime, could
// be accepted once more. A restore forgets far more.
//
// Storage is bounded: expired proofs and idle keys with their spent requests
// are deleted (each driver sweeps each table at most once a second), a key
// stores at most 64 spent requests beyond those in its window (migration 6),
// a new limiter key is refused when its rule already has MaxKeys keys (as the
// in-memory limiter does), and keys are stored as their SHA-256. Times are the
// callers' clocks (the brokers'), so brokers behind one balancer keep their
// clocks in step (NTP), as they must for tokens anyway.

const sharedSchema = `
CREATE TABLE dpop_replays (
	id     bytea  PRIMARY KEY,
	expiry bigint NOT NULL
);
CREATE INDEX dpop_replays_expiry ON dpop_replays (expiry);
CREATE TABLE rate_keys (
	rule    text   NOT NULL,
	key     bytea  NOT NULL,
	last    bigint NOT NULL,
	refused bigint,
	PRIMARY KEY (rule, key)
);
CREATE INDEX rate_keys_last ON rate_keys (rule, last);
CREATE TABLE rate_spent (
	rule text   NOT NULL,
	key  bytea  NOT NULL,
	at   bigint NOT NULL
);
CREATE INDEX rate_spent_key ON rate_spent (rule, key, at);
CREATE INDEX rate_spent_at ON rate_spent (rule, at);
-- agentkeys_allow spends one request of (r, k) at now (unix ns) if fewer than
-- lim were spent in the window (now - win, now]: it returns 0, else how long
-- until the oldest spent one comes back (> 0), or -1 when the key is new and
-- the rule already has maxkeys keys. The key's row lock orders concurrent calls.
CREATE FUNCTION agentkeys_allow(r text, k bytea, now bigint, win bigint, lim int, maxkeys int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n      int;
	oldest bigint;
BEGIN
	PERFORM 1 FROM rate_keys WHERE rule = r AND key = k FOR UPDATE;
	IF NOT FOUND THEN
		IF (SELECT count(*) FROM rate_keys WHERE rule = r) >= maxkeys THEN
			RETURN -1;
		END IF;
		INSERT INTO rate_keys (rule, key, last) VALUES (r, k, now) ON CONFLICT (rule, key) DO NOTHING;
		PERFORM 1 FROM rate_keys WHERE rule = r AND key = k FOR UPDATE;
	END IF;
	DELETE FROM rate_spent WHERE rule = r AND key = k AND at <= now - win;
	SELECT count(*), min(at) INTO n, oldest FROM rate_spent WHERE rule = r AND key = k;
	IF n < lim THEN
		INSERT INTO rate_spent (rule, key, at) VALUES (r, k, now);
		UPDATE rate_keys SET last = greatest(last, now) WHERE rule = r AND key = k;
		RETURN 0;
	END IF;
	RETURN greatest(oldest + win - now, 1);
END $$;`

// rateCountSchema (migration 4) makes agentkeys_allow O(1) per call: each key
// row keeps the number of its spent requests still stored (spent), so a call
// no longer counts the key's rows in the window (it did, and at thousands of
// requests a minute that count was most of PostgreSQL's time). A call deletes
// the key's spent requests that left the window (each row is deleted once, so
// this is O(1) amortised), subtracts them from spent, and admits when fewer
// than the limit remain: the same sliding window, exact, as before.
//
// Spent rows are now deleted only with their key's row locked (by the call, or
// by the sweep with the key itself once idle), so spent stays their number.
// The key's row is locked before the rule's keys are counted for MaxKeys, and
// a caller that finds its key created meanwhile uses it: concurrent first calls
// on one key all share its row, none refused as if the rule were full (they
// were: a call that found no row, then counted the one another call had just
// committed, refused itself for a whole window on a rule with MaxKeys 1, the
// global anonymous limits).
const rateCountSchema = `
DELETE FROM rate_spent s WHERE NOT EXISTS
	(SELECT 1 FROM rate_keys k WHERE k.rule = s.rule AND k.key = s.key);
ALTER TABLE rate_keys ADD COLUMN spent int NOT NULL DEFAULT 0;
UPDATE rate_keys k SET spent = (SELECT count(*) FROM rate_spent s WHERE s.rule = k.rule AND s.key = k.key);
DROP INDEX rate_spent_at;
CREATE OR REPLACE FUNCTION agentkeys_allow(r text, k bytea, now bigint, win bigint, lim int, maxkeys int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n      int;
	gone   int;
	oldest bigint;
BEGIN
	LOOP
		SELECT spent INTO n FROM rate_keys WHERE rule = r AND key = k FOR UPDATE;
		EXIT WHEN FOUND;
		INSERT INTO rate_keys (rule, key, last, spent) VALUES (r, k, now, 0) ON CONFLICT (rule, key) DO NOTHING;
		IF FOUND THEN -- ours, locked until commit
			IF (SELECT count(*) FROM rate_keys WHERE rule = r) > maxkeys THEN
				DELETE FROM rate_keys WHERE rule = r AND key = k;
				RETURN -1;
			END IF;
			n := 0;
			EXIT;
		END IF;
		-- another call created it since: lock it on the next turn.
	END LOOP;
	DELETE FROM rate_spent WHERE rule = r AND key = k AND at <= now - win;
	GET DIAGNOSTICS gone = ROW_COUNT;
	n := greatest(n - gone, 0);
	IF n < lim THEN
		INSERT INTO rate_spent (rule, key, at) VALUES (r, k, now);
		UPDATE rate_keys SET spent = n + 1, last = greatest(last, now) WHERE rule = r AND key = k;
		RETURN 0;
	END IF;
	IF gone > 0 THEN
		UPDATE rate_keys SET spent = n WHERE rule = r AND key = k;
	END IF;
	SELECT min(at) INTO oldest FROM rate_spent WHERE rule = r AND key = k;
	RETURN greatest(oldest + win - now, 1);
END $$;`

// rateManySchema (migration 5) decides many calls of one rule in one call:
// agentkeys_allow for each (key, now) in the order given, one after the other,
// in the caller's transaction, so a key given twice is decided twice, the
// second after the first, exactly as two calls one after the other would be.
// (A set-based statement for a batch of distinct keys was tried: measured by
// the backend's CPU time, it cost as much or more than these calls.)
const rateManySchema = `
CREATE FUNCTION agentkeys_allow_many(r text, ks bytea[], nows bigint[], win bigint, lim int, maxkeys int) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
	out bigint[] := array_fill(0::bigint, ARRAY[cardinality(ks)]);
BEGIN
	IF cardinality(nows) IS DISTINCT FROM cardinality(ks) THEN
		RAISE EXCEPTION 'agentkeys_allow_many: % keys, % times', cardinality(ks), cardinality(nows);
	END IF;
	FOR i IN 1 .. cardinality(ks) LOOP
		out[i] := agentkeys_allow(r, ks[i], nows[i], win, lim, maxkeys);
	END LOOP;
	RETURN out;
END $$;`

// rateLazySchema (migration 6) makes most calls of agentkeys_allow two
// statements instead of four: one UPDATE locks the key's row and spends
// optimistically (spent + 1, returning the count before), and one INSERT
// records the request. spent counts the key's spent requests still stored,
// the ones out of the window included, so while it is under the limit the
// key is certainly under it and the call admits without looking at its rows.
// Only when the stored count reaches the limit, and on every 64th stored
// request (so a key with a high limit stores at most 64 requests beyond its
// window), does a call delete what left the window and decide on the rest:
// the same exact sliding window. last is now the key's newest call, refused
// ones included (a refused key has its limit spent within the window, so it
// was not idle anyway).
const rateLazySchema = `
CREATE OR REPLACE FUNCTION agentkeys_allow(r text, k bytea, now bigint, win bigint, lim int, maxkeys int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n      int; -- spent requests stored before this call
	gone   int;
	oldest bigint;
BEGIN
	LOOP
		UPDATE rate_keys SET spent = spent + 1, last = greatest(last, now) WHERE rule = r AND key = k RETURNING spent - 1 INTO n;
		EXIT WHEN FOUND;
		INSERT INTO rate_keys (rule, key, last, spent) VALUES (r, k, now, 1) ON CONFLICT (rule, key) DO NOTHING;
		IF FOUND THEN -- ours, locked until commit
			IF (SELECT count(*) FROM rate_keys WHERE rule = r) > maxkeys THEN
				DELETE FROM rate_keys WHERE rule = r AND key = k;
				RETURN -1;
			END IF;
			n := 0;
			EXIT;
		END IF;
		-- another call created it since: lock it on the next turn.
	END LOOP;
	IF n < lim AND n % 64 <> 63 THEN
		INSERT INTO rate_spent (rule, key, at) VALUES (r, k, now);
		RETURN 0;
	END IF;
	DELETE FROM rate_spent WHERE rule = r AND key = k AND at <= now - win;
	GET DIAGNOSTICS gone = ROW_COUNT;
	n := greatest(n - gone, 0);
	IF n < lim THEN
		INSERT INTO rate_spent (rule, key, at) VALUES (r, k, now);
		UPDATE rate_keys SET spent = n + 1 WHERE rule = r AND key = k;
		RETURN 0;
	END IF;
	UPDATE rate_keys SET spent = n WHERE rule = r AND key = k;
	SELECT min(at) INTO oldest FROM rate_spent WHERE rule = r AND key = k;
	RETURN greatest(oldest + win - now, 1);
END $$;`

// sharedTimeout bounds one call: the request's context does not reach these
// stores, and an unanswered one refuses the request (fail closed).
const sharedTimeout = 5 * time.Second

// sweeper runs a delete at most once a second of the caller's clock. A sweep
// takes only rows no one holds (FOR UPDATE SKIP LOCKED) and so never waits:
// otherwise a sweep, locking rows in its scan's order, and agentkeys_allow,
// deleting its key's rows in index order, could each wait for the other, and
// PostgreSQL would abort one as a deadlock, refusing a request (seen in
// e2e TestSoakTwoBrokers with 50 agents). What it skips, the next sweep takes.
type sweeper struct {
	mu   sync.Mutex
	next int64 // unix ns
}

func (s *sweeper) due(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.UnixNano() < s.next {
		return false
	}
	s.next = now.Add(time.Second).UnixNano()
	return true
}

// maxBatch bounds the calls one transaction carries; flights is how many such
// transactions one driver (one broker) may have in flight at once.
const (
	maxBatch = 256
	flights  = 1
)

// sharedCall is a First call (lim nil) or an Allow call of lim; sharedAnswer
// is its answer: fresh for First, agentkeys_allow's wait for Allow.
type sharedCall struct {
	lim   *limiter
	proof proof
	spend spend
}

type sharedAnswer struct {
	fresh bool
	wait  int64
}

// runShared answers a batch of First and Allow calls in one transaction and
// one round trip (one pipeline, one Sync), committed before any caller is
// answered: the proofs first, then each rule's calls, the rules by name. So
// every broker's transactions lock rows in one order (proofs by id, then each
// rule's keys in order) and cannot deadlock one another.
func (d *Driver) runShared(ctx context.Context, calls []sharedCall) ([]sharedAnswer, error) {
	if d.sharedPool == nil {
		return nil, errors.New("postgres: ledger opened read-only")
	}
	out := make([]sharedAnswer, len(calls))
	var proofs []int
	spends := map[*limiter][]int{}
	for i, c := range calls {
		if c.lim == nil {
			proofs = append(proofs, i)
		} else {
			spends[c.lim] = append(spends[c.lim], i)
		}
	}
	var b pgx.Batch
	if len(proofs) > 0 {
		d.queueProofs(&b, calls, proofs, out)
	}
	lims := slices.SortedFunc(maps.Keys(spends), func(a, b *limiter) int { return strings.Compare(a.r.Name, b.r.Name) })
	for _, l := range lims {
		l.queueSpends(&b, calls, spends[l], out)
	}
	// One pipeline, one Sync: one implicit transaction, on a connection that
	// commits without waiting for the WAL (see Durability above).
	if err := d.sharedPool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("postgres: recording proofs and spent requests: %w", err)
	}
	return out, nil
}

// Replays returns the ReplayStore in this database that every broker on it
// shares: a proof accepted through one is refused by all.
func (d *Driver) Replays() dpop.ReplayStore { return &replays{d: d} }

type replays struct{ d *Driver }

// proof is one First call: unix seconds.
type proof struct {
	id          dpop.ProofID
	now, expiry int64
}

// First implements dpop.ReplayStore: the row is inserted, or taken over when
// the one there has expired; RETURNING says whether either happened.
func (r *replays) First(ctx context.Context, id dpop.ProofID, now, expiry time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	a, err := r.d.shared.Do(ctx, sharedCall{proof: proof{id: id, now: now.Unix(), expiry: expiry.Unix()}})
	return a.fresh, err
}

// queueProofs queues the statements that answer the First calls at idx (in
// arrival order) exactly as if they had been made one after the other. They
// go in rounds, each one statement over distinct ids with one now (as a lone
// call's statement would be); a round takes the calls the earlier rounds
// left, so a second use of an id in one batch comes after the first and is
// refused as a replay. Usually a batch is one round. Each round inserts in id
// order.
func (d *Driver) queueProofs(b *pgx.Batch, calls []sharedCall, idx []int, out []sharedAnswer) {
	// The sweep goes by the batch's earliest time: what it deletes has expired
	// for every call in the batch.
	oldest := calls[idx[0]].proof.now
	for _, i := range idx {
		oldest = min(oldest, calls[i].proof.now)
	}
	if d.replaySweep.due(time.Unix(oldest, 0)) {
		b.Queue(`DELETE FROM dpop_replays WHERE id IN
(SELECT id FROM dpop_replays WHERE expiry <= $1 FOR UPDATE SKIP LOCKED)`, oldest)
	}
	p := func(i int) *proof { return &calls[i].proof }
	left := idx
	for len(left) > 0 {
		var round, later []int
		seen := make(map[dpop.ProofID]bool, len(left))
		now := p(left[0]).now
		for _, i := range left {
			// An id seen in this pass, taken or left, waits: its calls keep their order.
			if c := p(i); seen[c.id] || c.now != now {
				later = append(later, i)
			} else {
				round = append(round, i)
			}
			seen[p(i).id] = true
		}
		slices.SortFunc(round, func(a, b int) int { return bytes.Compare(p(a).id[:], p(b).id[:]) })
		ids, exps := make([][]byte, len(round)), make([]int64, len(round))
		for j, i := range round {
			ids[j], exps[j] = p(i).id[:], p(i).expiry
		}
		b.Queue(`INSERT INTO dpop_replays (id, expiry) SELECT * FROM unnest($1::bytea[], $2::bigint[])
ON CONFLICT (id) DO UPDATE SET expiry = excluded.expiry WHERE dpop_replays.expiry <= $3 RETURNING id`,
			ids, exps, now).Query(func(rows pgx.Rows) error {
			var got []byte
			_, err := pgx.ForEachRow(rows, []any{&got}, func() error {
				for _, i := range round {
					if bytes.Equal(p(i).id[:], got) {
						out[i].fresh = true
					}
				}
				return nil
			})
			return err
		})
		left = later
	}
}

// Limiters returns the ratelimit.New whose limiters live in this database and
// are shared by every broker on it: a limit is exact across them.
func (d *Driver) Limiters() ratelimit.New {
	return func(r ratelimit.Rule) ratelimit.Limiter {
		if r.MaxKeys <= 0 {
			r.MaxKeys = 100_000
		}
		return &limiter{d: d, r: r}
	}
}

type limiter struct {
	d     *Driver
	r     ratelimit.Rule
	sweep sweeper
}

// spend is one Allow call: the key's digest, unix ns.
type spend struct {
	key []byte
	now int64
}

func digest(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// Allow implements ratelimit.Limiter.
func (l *limiter) Allow(ctx context.Context, key string, now time.Time) (bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	a, err := l.d.shared.Do(ctx, sharedCall{lim: l, spend: spend{key: digest(key), now: now.UnixNano()}})
	switch {
	case err != nil:
		return false, 0, err
	case a.wait == 0:
		return true, 0, nil
	case a.wait < 0: // the rule's keys are all in use: refused until one goes idle
		return false, l.r.Window, nil
	}
	return false, min(time.Duration(a.wait), l.r.Window), nil
}

// queueSpends queues one agentkeys_allow_many call for the Allow calls at idx
// (in arrival order), which decides them one after the other in the order
// given: exactly as the same calls made one after the other would be. The
// order is by key, then arrival: the calls on one key stay in arrival order,
// and calls on different keys, which were concurrent, go in one of the orders
// they could have gone in anyway (it matters only to which new key a full
// rule refuses).
func (l *limiter) queueSpends(b *pgx.Batch, calls []sharedCall, idx []int, out []sharedAnswer) {
	win := int64(l.r.Window)
	oldest := calls[idx[0]].spend.now
	for _, i := range idx {
		oldest = min(oldest, calls[i].spend.now)
	}
	if l.sweep.due(time.Unix(0, oldest)) {
		// Idle keys and their spent requests, all out of the window (for
		// every call in the batch), in one statement: a key's spent rows go
		// only with its row locked.
		b.Queue(`WITH idle AS (DELETE FROM rate_keys WHERE rule = $1 AND key IN
(SELECT key FROM rate_keys WHERE rule = $1 AND last <= $2 AND coalesce(refused, 0) <= $2 FOR UPDATE SKIP LOCKED) RETURNING key)
DELETE FROM rate_spent WHERE rule = $1 AND key IN (SELECT key FROM idle)`, l.r.Name, oldest-win)
	}
	order := slices.Clone(idx)
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(calls[a].spend.key, calls[b].spend.key) })
	keys, nows := make([][]byte, len(order)), make([]int64, len(order))
	for j, i := range order {
		keys[j], nows[j] = calls[i].spend.key, calls[i].spend.now
	}
	b.Queue(`SELECT agentkeys_allow_many($1, $2, $3, $4, $5, $6)`,
		l.r.Name, keys, nows, win, max(l.r.Count, 1), l.r.MaxKeys).QueryRow(func(row pgx.Row) error {
		var waits []int64
		if err := row.Scan(&waits); err != nil {
			return fmt.Errorf("rate limit %s: %w", l.r.Name, err)
		}
		if len(waits) != len(order) {
			return fmt.Errorf("rate limit %s: %d answers to %d calls", l.r.Name, len(waits), len(order))
		}
		for j, i := range order {
			out[i].wait = waits[j]
		}
		return nil
	})
}

// FirstRefusal implements ratelimit.Limiter: it marks the key refused at now
// unless a refusal was reported within the window before.
func (l *limiter) FirstRefusal(ctx context.Context, key string, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	t := now.UnixNano()
	var one int
	err := l.d.pool.QueryRow(ctx, `INSERT INTO rate_keys (rule, key, last, refused) VALUES ($1, $2, $3, $3)
ON CONFLICT (rule, key) DO UPDATE SET refused = $3 WHERE rate_keys.refused IS NULL OR rate_keys.refused <= $4 RETURNING 1`,
		l.r.Name, digest(key), t, t-int64(l.r.Window)).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("postgres: rate limit %s: %w", l.r.Name, err)
	}
	return true, nil
}
