// How sluicectl prints the broker's answers: the stats table, the storage
// line, what a dead-letter operation returned, and the triggers.
#pragma once

#include <vector>

#include "sluice/client/client.hpp"

namespace sluicectl {

/// The stats table: a heading, then one line per queue.
void print_queue_stats(const std::vector<sluice::client::QueueStats>& queues);
/// The STORAGE line after the table of all queues.
void print_storage_stats(const sluice::client::StorageStats& s);
/// The result of `sluicectl dlq OP`, in the form that operation prints.
void print_dead_letters(const sluice::client::DeadLetterQuery& q,
                        const sluice::client::DeadLetterResult& result);
/// One line per trigger, after a heading.
void print_triggers(const std::vector<sluice::client::TriggerState>& triggers);

}  // namespace sluicectl
