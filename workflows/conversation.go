package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/runstate"
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
	// interactiveRuns is false for a run started before interactive runs
	// were answered: it notes a message as it arrives, as it did then.
	interactiveRuns bool
	// mode is known once the run has started: "" before, then the run's.
	mode string
	// turn is the turn running, 0 while none is.
	turn int
	// initial is the workflow input's initial_message, told with the task.
	initial *signals.Message
}

// waitEnd is why an interactive run stopped waiting for its next message.
type waitEnd int

const (
	waitMessage  waitEnd = iota // a message came: the next turn answers it
	waitEnded                   // complete_task ended the run
	waitInactive                // no message or heartbeat within the inactivity timeout
	waitStopped                 // the run's own deadline
)

// listen registers the signals and queries of the run and starts receiving.
func listen(ctx workflow.Context, ref activities.RunRef) (*conversation, error) {
	c := &conversation{
		ref:             ref,
		acts:            workflow.GetVersion(ctx, handlesSignals, workflow.DefaultVersion, 1) >= 1,
		interactiveRuns: workflow.GetVersion(ctx, interactiveRuns, workflow.DefaultVersion, 1) >= 1,
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

// message keeps a user's message for the turn that will answer it. A
// background run answers none: its log says so rather than drop it unseen.
// One that comes while a turn runs waits for the turn's end: the agents
// take no message in the middle of a turn, a steer neither.
func (c *conversation) message(ctx workflow.Context, m signals.Message) {
	if !c.state.Add(m) {
		workflow.GetLogger(ctx).Info("message dropped: sent before", "message_id", m.MessageID)
		return
	}
	if !c.acts {
		return
	}
	switch {
	case !c.interactiveRuns || c.mode == runstate.Background:
		c.unanswered(ctx, m, len(c.state.Pending))
	case c.mode == runstate.Interactive && c.turn > 0:
		text := fmt.Sprintf("%s received; the agent is in turn %d and takes no message in the middle of a turn: the next turn answers it", m.Describe(), c.turn)
		note(ctx, c.ref, messageKey(m, len(c.state.Pending)), acp.LevelInfo, text)
	}
}

func (c *conversation) unanswered(ctx workflow.Context, m signals.Message, n int) {
	note(ctx, c.ref, messageKey(m, n), acp.LevelWarn, fmt.Sprintf(
		"%s received; not answered: this run is in background mode, which ends with the agent's one turn (follow-ups are answered by interactive runs)",
		m.Describe()))
}

func messageKey(m signals.Message, n int) string {
	if m.MessageID != "" {
		return "message-" + m.MessageID
	}
	return fmt.Sprintf("message-%d", n)
}

// started records the run's mode once StartRun has read it. A background
// run then notes the messages that came before it knew.
func (c *conversation) started(ctx workflow.Context, interactive bool) {
	if !c.interactiveRuns {
		return
	}
	c.mode = runstate.Background
	if interactive {
		c.mode = runstate.Interactive
		return
	}
	if c.acts {
		for i, m := range c.state.Pending {
			c.unanswered(ctx, m, i+1)
		}
	}
}

// keepInitial keeps the workflow input's initial_message, told the agent
// with the task: a signal that brings it again (its message_id) is dropped.
func (c *conversation) keepInitial(in Input) {
	if in.InitialMessage == nil || !c.interactiveRuns {
		return
	}
	m := *in.InitialMessage
	c.initial = &m
	// Answered by the first turn, not as a follow-up.
	c.state.Remember(m)
}

// initialMessage is the text of the initial_message kept, "" without one.
func (c *conversation) initialMessage() string {
	if c.initial == nil {
		return ""
	}
	return c.initial.Message
}

// turnBegins records the turn that runs until the next wait.
func (c *conversation) turnBegins(turn int) { c.turn = turn }

// await waits, after the run's turns, for the next message: it returns the
// oldest one kept, or why the run stops waiting. A heartbeat (the API sends
// one as the run's log grows, and a client may send its own) starts the
// inactivity timeout over.
func (c *conversation) await(ctx workflow.Context, run activities.RunContext, turns int) (signals.Message, waitEnd) {
	c.turn = 0
	if len(c.state.Pending) == 0 && c.ended == nil {
		note(ctx, c.ref, fmt.Sprintf("waiting-%d", turns), acp.LevelInfo, fmt.Sprintf(
			"turn %d done; waiting for a follow-up message (the run ends when you end it, or after %s without one)", turns, run.Settings.Inactivity))
	}
	for {
		beats := c.state.Heartbeats
		arrived, err := workflow.AwaitWithTimeout(ctx, run.Settings.Inactivity, func() bool {
			return c.ended != nil || len(c.state.Pending) > 0 || c.state.Heartbeats != beats
		})
		switch {
		case c.ended != nil:
			return signals.Message{}, waitEnded
		case err != nil:
			return signals.Message{}, waitStopped
		case !arrived:
			note(ctx, c.ref, fmt.Sprintf("inactive-%d", turns), acp.LevelInfo, fmt.Sprintf(
				"no follow-up message or heartbeat for %s: the run ends", run.Settings.Inactivity))
			return signals.Message{}, waitInactive
		case len(c.state.Pending) > 0:
			m := c.state.Pending[0]
			c.state.Pending = c.state.Pending[1:]
			return m, waitMessage
		}
	}
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
	if c.turn > 0 || c.mode != runstate.Interactive {
		msg += "; its steps were stopped"
	}
	note(dctx, c.ref, "ended-outside", acp.LevelWarn, msg)
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
