// Package contract is what the example services agree on: the request type,
// the event topics and the messages they exchange. Real services share such
// a package (or a schema) in the same way; nothing else is shared.
package contract

import "time"

// Names used on the mesh.
const (
	// ValidateType is the request type the validation service answers.
	ValidateType = "validate"
	// TopicCompleted is published by the payment service for a validated payment.
	TopicCompleted = "payment.completed"
	// TopicRejected is published by the payment service for a rejected card.
	TopicRejected = "payment.rejected"
	// TopicAll is the pattern the monitor subscribes to.
	TopicAll = "payment.*"
	// CodeInvalidCard is the error code of a rejected card.
	CodeInvalidCard = "invalid_card"
)

// ValidateRequest asks a validation service to check a card number.
type ValidateRequest struct {
	Card string `msgpack:"card"`
}

// ValidateReply is a validation service's answer for a valid card.
type ValidateReply struct {
	Card   string `msgpack:"card"`
	Status string `msgpack:"status"` // "validated"
	By     string `msgpack:"by"`     // the node ID of the instance that did the work
}

// PaymentEvent is published on TopicCompleted and TopicRejected.
type PaymentEvent struct {
	Card   string    `msgpack:"card"`
	Status string    `msgpack:"status"`           // "validated" or "rejected"
	By     string    `msgpack:"by"`               // the validation instance that answered
	Reason string    `msgpack:"reason,omitempty"` // why a card was rejected
	At     time.Time `msgpack:"at"`
}
