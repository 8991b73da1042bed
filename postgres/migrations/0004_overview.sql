-- The status page's overview (asyncfn.Overviewer) counts the batches finished lately and
-- lists the latest failures, each from a range of a partial index by finish time, however
-- many finished batches the retention period keeps. Two indexes: with the state in one
-- index's key, the planner drops the state condition that the index's predicate implies
-- and scans the whole index for the window. Like every migration they are built in its
-- transaction (CREATE INDEX CONCURRENTLY cannot run in one), which holds writes to batches
-- while they are built, once.
CREATE INDEX batches_finished ON batches (finished_at) WHERE state IN ('succeeded', 'failed');
CREATE INDEX batches_failed ON batches (finished_at) WHERE state = 'failed';
