// Package execution holds what the test processors share about Dkron's types.Execution.
package execution

import "github.com/distribworks/dkron/v4/types"

// Returned is e's fields in a new struct: what a processor returns (Dkron's Processor interface
// returns an Execution by value). Copying the struct itself would copy its protobuf state, a
// mutex among it, which go vet's copylocks check refuses.
func Returned(e *types.Execution) types.Execution {
	return types.Execution{
		JobName: e.JobName, Success: e.Success, Output: e.Output, NodeName: e.NodeName,
		Group: e.Group, Attempt: e.Attempt, StartedAt: e.StartedAt, FinishedAt: e.FinishedAt,
	}
}
