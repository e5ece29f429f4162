package gate

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// ChannelDown returns an Options.Unavailable for a connection made by
// Dial: it reports true while the channel is in TRANSIENT_FAILURE, i.e.
// its connection attempts fail. While the channel is IDLE or CONNECTING
// (first connect, or reconnect after an authz restart) checks still wait
// for it, so a restart does not turn into 503s.
func ChannelDown(conn *grpc.ClientConn) func() bool {
	return func() bool { return conn.GetState() == connectivity.TransientFailure }
}
