package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/signals"
)

// conversation is the run's side of PostHog's signals: it stops the work
// when the run is ended from outside, and keeps heartbeats and messages for
// the turns that will answer them.
type conversation struct {
	ref activities.RunRef
	// acts is false for a run started before signals were handled: it
	// receives them but issues no command for them, as it did not then.
	acts  bool
	state signals.Conversation
	// ended is the complete_task that ended the run from outside.
	ended *signals.Completion
	// finishing is set once the workflow writes its own terminal status:
	// a complete_task after it is that PATCH coming back.
	finishing bool
	stopWork  func()
}

// listen registers the signals and queries of the run and starts receiving.
func listen(ctx workflow.Context, ref activities.RunRef) (*conversation, error) {
	c := &conversation{
		ref:  ref,
		acts: workflow.GetVersion(ctx, handlesSignals, workflow.DefaultVersion, 1) >= 1,
	}
	if err := workflow.SetQueryHandler(ctx, signals.SteeringProtocolVersionQuery, func() (int, error) {
		return signals.SteeringProtocolVersion, nil
	}); err != nil {
		return nil, fmt.Errorf("register query %s: %w", signals.SteeringProtocolVersionQuery, err)
	}
	if err := workflow.SetQueryHandler(ctx, signals.StateQuery, func() (signals.Conversation, error) {
		return c.state, nil
	}); err != nil {
		return nil, fmt.Errorf("register query %s: %w", signals.StateQuery, err)
	}
	workflow.Go(ctx, func(ctx workflow.Context) {
		sel := workflow.NewSelector(ctx)
		for _, name := range signals.Names {
			sel.AddReceive(workflow.GetSignalChannel(ctx, name), func(ch workflow.ReceiveChannel, _ bool) {
				var args signals.Args
				ch.Receive(ctx, &args)
				c.receive(ctx, name, args)
			})
		}
		for {
			sel.Select(ctx)
		}
	})
	return c, nil
}

func (c *conversation) receive(ctx workflow.Context, name string, args signals.Args) {
	logger := workflow.GetLogger(ctx)
	if args.FirstOnly {
		logger.Error("signal decoded without signals.DataConverter: only its first argument was read", "signal", name)
	}
	var err error
	switch name {
	case signals.CompleteTask:
		var done signals.Completion
		if done, err = signals.DecodeCompletion(args); err == nil {
			c.complete(ctx, done)
		}
	case signals.Heartbeat:
		var active bool
		if active, err = signals.DecodeHeartbeat(args); err == nil {
			c.state.Heartbeat(active)
		}
	case signals.FollowUp, signals.Steer:
		var m signals.Message
		if m, err = signals.DecodeMessage(name, args); err == nil {
			c.message(ctx, m)
		}
	case signals.PermissionResponse:
		var p signals.Permission
		if p, err = signals.DecodePermission(args); err == nil {
			c.state.Permission(p)
		}
	}
	if err != nil {
		logger.Warn("signal ignored", "signal", name, "error", err)
	}
}

func (c *conversation) complete(ctx workflow.Context, done signals.Completion) {
	logger := workflow.GetLogger(ctx)
	switch {
	case c.finishing:
		logger.Info("complete_task after the run's own terminal status: nothing to do", "status", done.Status)
	case c.ended != nil:
		logger.Info("complete_task again: the run has already ended", "status", done.Status)
	case !c.acts:
		logger.Info("complete_task not acted on by a run started before signals were handled", "status", done.Status)
	default:
		c.ended = &done
		if c.stopWork != nil {
			c.stopWork()
		}
	}
}

// message keeps a user's message. No turn answers it yet: a background run
// ends with its agent's one turn, and the run's log says so rather than
// dropping the message unseen.
func (c *conversation) message(ctx workflow.Context, m signals.Message) {
	if !c.state.Add(m) {
		workflow.GetLogger(ctx).Info("message dropped: sent before", "message_id", m.MessageID)
		return
	}
	if !c.acts {
		return
	}
	key := fmt.Sprintf("message-%d", len(c.state.Pending))
	if m.MessageID != "" {
		key = "message-" + m.MessageID
	}
	note(ctx, c.ref, key, acp.LevelWarn, fmt.Sprintf(
		"%s received; not answered: this run is in background mode, which ends with the agent's one turn (follow-ups are answered by interactive runs)",
		m.Describe()))
}

// endedOutside is the result of a run ended by complete_task: the status the
// API already holds, and no PATCH of the workflow's own.
func (c *conversation) endedOutside(ctx workflow.Context, res Result) (Result, error) {
	res.Status, res.ErrorMessage = c.ended.Status, c.ended.ErrorMessage
	msg := fmt.Sprintf("run ended from outside (%s)", c.ended.Status)
	if c.ended.ErrorMessage != "" {
		msg += ": " + c.ended.ErrorMessage
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	note(dctx, c.ref, "ended-outside", acp.LevelWarn, msg+"; its steps were stopped")
	workflow.GetLogger(ctx).Info("run ended from outside", "status", c.ended.Status)
	return res, nil
}

// settle ends the workflow task that recorded the run's last step before the
// workflow closes. A signal that arrives while that step runs (the echo of
// its terminal PATCH, a heartbeat of its log append) makes Temporal refuse a
// task that closes the workflow, and with it the step's result: the step
// would run again and write its log entries twice.
func (c *conversation) settle(ctx workflow.Context) {
	if !c.acts {
		return
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	_ = workflow.Sleep(dctx, time.Millisecond)
}
