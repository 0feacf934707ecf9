package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
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
// the other, whichever broker they reach. Concurrent calls through one handle
// share one statement (coalescer): one insert for many proofs, one
// agentkeys_allow_many call for many requests, answered exactly as the same
// calls one after the other.
//
// Storage is bounded: expired proofs and idle keys with their spent requests
// are deleted (each handle sweeps at most once a second), a key's spent
// requests older than its window by the key's next call, a new
// limiter key is refused when its rule already has MaxKeys keys (as the
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

// maxBatch bounds the calls one statement carries; flights is how many such
// statements one handle (one broker) may have in flight at once.
const (
	maxBatch = 256
	flights  = 2
)

// Replays returns the ReplayStore in this database that every broker on it
// shares: a proof accepted through one is refused by all. Concurrent First
// calls through one handle share a statement (coalescer).
func (d *Driver) Replays() dpop.ReplayStore {
	r := &replays{d: d}
	r.batch = coalescer[proof, bool]{run: r.record, max: maxBatch, flights: flights}
	return r
}

type replays struct {
	d     *Driver
	sweep sweeper
	batch coalescer[proof, bool]
}

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
	return r.batch.do(ctx, proof{id: id, now: now.Unix(), expiry: expiry.Unix()})
}

// record answers a batch of First calls exactly as if they had been made one
// after the other in arrival order. The batch goes in rounds, each one
// statement over distinct ids with one now (as a lone call's statement
// would be); a round takes the calls the earlier rounds left, so a second use
// of an id in one batch comes after the first and is refused as a replay.
// Usually a batch is one round. The rounds go in one round trip (one
// pipeline, one Sync: one implicit transaction), committed, durable, before
// any caller is answered. Each round inserts in id order, so two brokers'
// batches lock rows in one order and cannot deadlock.
func (r *replays) record(ctx context.Context, calls []proof) ([]bool, error) {
	// The sweep goes by the batch's earliest time: what it deletes has expired
	// for every call in the batch.
	oldest := calls[0].now
	for _, c := range calls {
		oldest = min(oldest, c.now)
	}
	if r.sweep.due(time.Unix(oldest, 0)) {
		if _, err := r.d.pool.Exec(ctx, `DELETE FROM dpop_replays WHERE id IN
(SELECT id FROM dpop_replays WHERE expiry <= $1 FOR UPDATE SKIP LOCKED)`, oldest); err != nil {
			return nil, fmt.Errorf("postgres: forgetting expired proofs: %w", err)
		}
	}
	var rounds [][]int // indexes into calls
	left := make([]int, len(calls))
	for i := range left {
		left[i] = i
	}
	for len(left) > 0 {
		var round, later []int
		seen := make(map[dpop.ProofID]bool, len(left))
		now := calls[left[0]].now
		for _, i := range left {
			// An id seen in this pass, taken or left, waits: its calls keep their order.
			c := calls[i]
			if seen[c.id] || c.now != now {
				later = append(later, i)
			} else {
				round = append(round, i)
			}
			seen[c.id] = true
		}
		slices.SortFunc(round, func(a, b int) int { return bytes.Compare(calls[a].id[:], calls[b].id[:]) })
		rounds = append(rounds, round)
		left = later
	}
	var b pgx.Batch
	fresh := make([]bool, len(calls))
	for _, round := range rounds {
		ids, exps := make([][]byte, len(round)), make([]int64, len(round))
		for j, i := range round {
			ids[j], exps[j] = calls[i].id[:], calls[i].expiry
		}
		b.Queue(`INSERT INTO dpop_replays (id, expiry) SELECT * FROM unnest($1::bytea[], $2::bigint[])
ON CONFLICT (id) DO UPDATE SET expiry = excluded.expiry WHERE dpop_replays.expiry <= $3 RETURNING id`,
			ids, exps, calls[round[0]].now).Query(func(rows pgx.Rows) error {
			var got []byte
			_, err := pgx.ForEachRow(rows, []any{&got}, func() error {
				for _, i := range round {
					if bytes.Equal(calls[i].id[:], got) {
						fresh[i] = true
					}
				}
				return nil
			})
			return err
		})
	}
	// One pipeline, one Sync: the rounds are one implicit transaction.
	if err := r.d.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("postgres: recording a proof: %w", err)
	}
	return fresh, nil
}

// Limiters returns the ratelimit.New whose limiters live in this database and
// are shared by every broker on it: a limit is exact across them. Concurrent
// Allow calls on one rule through one handle share a statement (coalescer).
func (d *Driver) Limiters() ratelimit.New {
	return func(r ratelimit.Rule) ratelimit.Limiter {
		if r.MaxKeys <= 0 {
			r.MaxKeys = 100_000
		}
		l := &limiter{d: d, r: r}
		l.batch = coalescer[spend, int64]{run: l.spend, max: maxBatch, flights: flights}
		return l
	}
}

type limiter struct {
	d     *Driver
	r     ratelimit.Rule
	sweep sweeper
	batch coalescer[spend, int64]
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
	wait, err := l.batch.do(ctx, spend{key: digest(key), now: now.UnixNano()})
	switch {
	case err != nil:
		return false, 0, err
	case wait == 0:
		return true, 0, nil
	case wait < 0: // the rule's keys are all in use: refused until one goes idle
		return false, l.r.Window, nil
	}
	return false, min(time.Duration(wait), l.r.Window), nil
}

// spend decides a batch of Allow calls in one call of agentkeys_allow_many,
// which decides them one after the other in the order given, in one
// transaction: exactly as the same calls made one after the other would be.
// The order is by key, then arrival: the calls on one key stay in arrival
// order, and calls on different keys, which were concurrent, go in one of the
// orders they could have gone in anyway (it matters only to which new key a
// full rule refuses). So two brokers' batches lock key rows in one order and
// cannot deadlock.
func (l *limiter) spend(ctx context.Context, calls []spend) ([]int64, error) {
	win := int64(l.r.Window)
	oldest := calls[0].now
	for _, c := range calls {
		oldest = min(oldest, c.now)
	}
	if l.sweep.due(time.Unix(0, oldest)) {
		// Idle keys and their spent requests, all out of the window (for
		// every call in the batch), in one statement: a key's spent rows go
		// only with its row locked.
		cut := oldest - win
		if _, err := l.d.pool.Exec(ctx, `WITH idle AS (DELETE FROM rate_keys WHERE rule = $1 AND key IN
(SELECT key FROM rate_keys WHERE rule = $1 AND last <= $2 AND coalesce(refused, 0) <= $2 FOR UPDATE SKIP LOCKED) RETURNING key)
DELETE FROM rate_spent WHERE rule = $1 AND key IN (SELECT key FROM idle)`, l.r.Name, cut); err != nil {
			return nil, fmt.Errorf("postgres: forgetting idle keys: %w", err)
		}
	}
	order := make([]int, len(calls))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(calls[a].key, calls[b].key) })
	keys, nows := make([][]byte, len(calls)), make([]int64, len(calls))
	for j, i := range order {
		keys[j], nows[j] = calls[i].key, calls[i].now
	}
	var waits []int64
	if err := l.d.pool.QueryRow(ctx, `SELECT agentkeys_allow_many($1, $2, $3, $4, $5, $6)`,
		l.r.Name, keys, nows, win, max(l.r.Count, 1), l.r.MaxKeys).Scan(&waits); err != nil {
		return nil, fmt.Errorf("postgres: rate limit %s: %w", l.r.Name, err)
	}
	if len(waits) != len(calls) {
		return nil, fmt.Errorf("postgres: rate limit %s: %d answers to %d calls", l.r.Name, len(waits), len(calls))
	}
	out := make([]int64, len(calls))
	for j, i := range order {
		out[i] = waits[j]
	}
	return out, nil
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
