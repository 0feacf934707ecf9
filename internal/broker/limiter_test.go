package broker

import (
	"testing"

	"github.com/agentkeys/agentkeys/internal/ratelimit"
	"github.com/agentkeys/agentkeys/internal/ratelimit/ratelimittest"
)

// The in-memory limiter, each broker's own by default, passes the suite every
// shared limiter must pass (its "store" is one process's limiters by rule).
func TestMemoryLimiterConformance(t *testing.T) {
	ratelimittest.Run(t, func(t *testing.T) ratelimittest.Opener {
		byRule := map[string]ratelimit.Limiter{}
		return func(r ratelimit.Rule) ratelimit.Limiter {
			if byRule[r.Name] == nil {
				byRule[r.Name] = NewMemoryLimiter(r)
			}
			return byRule[r.Name]
		}
	})
}
