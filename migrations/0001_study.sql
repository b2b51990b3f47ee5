-- hf-tailor study storage, schema version 1.
-- A study is one search: its journal header, the inputs workers need to score (family
-- sources with their file hashes, tasks), and its trials. A trial row is created when the
-- coordinator hands the proposal out (status queued), claimed by one worker (running, with
-- heartbeats), finished in the transaction that stores the worker's measurement (done), or
-- failed after its worker stopped heartbeating twice. `told` numbers the results in the
-- order the coordinator told its optimiser; `asked_after` is how many were told before the
-- proposal was made: together they replay the search exactly.

CREATE TABLE hf_tailor_study (
    name        text PRIMARY KEY,
    header      jsonb NOT NULL,
    inputs      jsonb NOT NULL,
    trials      integer NOT NULL,
    finished    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hf_tailor_trial (
    study        text NOT NULL REFERENCES hf_tailor_study (name) ON DELETE CASCADE,
    idx          integer NOT NULL,
    assignment   jsonb NOT NULL,
    asked_after  integer NOT NULL,
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    worker       text,
    claimed_at   timestamptz,
    heartbeat_at timestamptz,
    finished_at  timestamptz,
    finish_seq   bigint,
    scored       jsonb,
    told         integer,
    record       jsonb,
    PRIMARY KEY (study, idx)
);

CREATE INDEX hf_tailor_trial_queued ON hf_tailor_trial (study, idx) WHERE status = 'queued';
CREATE UNIQUE INDEX hf_tailor_trial_told ON hf_tailor_trial (study, told) WHERE told IS NOT NULL;
CREATE SEQUENCE hf_tailor_finish_seq;

CREATE TABLE hf_tailor_worker (
    study        text NOT NULL REFERENCES hf_tailor_study (name) ON DELETE CASCADE,
    name         text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study, name)
);
