package gateway

import "github.com/civicwifi/civicwifi/internal/groupcommit"

// record is one step of the store of record and the session events around
// it, decided under kmu (which fixes the order of records) and written by
// the journal in that order, grouped with whatever other records are
// waiting (one store transaction and one outbox write for a whole burst of
// logins: with fsync at hundreds of microseconds, a write per login would
// cap the site at a few hundred logins a second).
//
// Sessions in a record are copies: the journal may write them after the
// live session moved on.
type record struct {
	// before go to the controller's outbox before the store is written:
	// stops (once the store has a session as ended, nothing would send its
	// stop again after a crash, while a stop sent twice carries the same
	// id and is recognised) and interims.
	before []Event
	change Change
	// after go out once the store holds the sessions: starts (a crash
	// before that leaves no session, and the controller must not count
	// one). A stop of the same session in the same batch reaches the
	// controller first; it keeps a session it saw stop ended.
	after []Event
}

func newJournal(g *Gateway) *groupcommit.Log[record] {
	return groupcommit.New(func(rs []record) error {
		var before, after []Event
		changes := make([]Change, 0, len(rs))
		for _, r := range rs {
			before = append(before, r.before...)
			after = append(after, r.after...)
			if len(r.change.Sessions) > 0 {
				changes = append(changes, r.change)
			}
		}
		g.emit(before...)
		if len(changes) > 0 {
			if err := g.o.Store.Write(changes); err != nil {
				return err
			}
		}
		g.emit(after...)
		return nil
	})
}

// copies returns copies of ss.
func copies(ss []*Session) []*Session {
	out := make([]*Session, len(ss))
	for i, s := range ss {
		c := *s
		out[i] = &c
	}
	return out
}
