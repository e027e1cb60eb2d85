-- Activity stored as chunks (issue #18: its cost on the SCIM workloads):
-- one row for each organisation's part of each batch the core stores, its
-- entries as arrays, one array for each field. A row per request cost
-- PostgreSQL about 2.5 µs an entry (its heap tuple, its primary key entry, its
-- WAL), a fifth of all activity cost on a GET; a chunk costs one heap row
-- and one entry in each index for up to a thousand requests.
--
-- The arrays are stored out of line and uncompressed (STORAGE EXTERNAL):
-- compressing them (pglz) cost as much as rows did.
--
-- A chunk holds requests of one minute at most (core.activity.CHUNK_SPAN),
-- so that pruning by age, a chunk at a time, keeps an entry at most that much
-- past the retention, and so that chunks read newest first find a page's
-- entries in the first few.
--
-- Readers see one row per request through the view `activity` below, and
-- pick the chunks to unnest by what the view says of each chunk (its time
-- span, whether it holds a failure): core.activity, core.organization_status.
--
-- chunk_id is taken under the batch lock (core.activity.START_BATCH): chunks
-- commit in chunk_id order, which is what WatchActivity follows; this
-- replaces activity_batches.
CREATE TABLE activity_chunks (
    org_id          uuid        NOT NULL,
    chunk_id        bigint      GENERATED ALWAYS AS IDENTITY,
    first_time      timestamptz NOT NULL,
    last_time       timestamptz NOT NULL,
    entries         integer     NOT NULL,
    errors          integer     NOT NULL,
    -- one element for each request, in the order the gateway sent them
    request_time_us bigint[]    NOT NULL,
    token_id        uuid[]      NOT NULL,
    request_id      text[]      NOT NULL,
    client          text[]      NOT NULL,
    user_agent      text[]      NOT NULL,
    method          text[]      NOT NULL,
    route           text[]      NOT NULL,
    resource_id     text[]      NOT NULL,
    filter          text[]      NOT NULL,
    status          smallint[]  NOT NULL,
    scim_type       text[]      NOT NULL,
    detail          text[]      NOT NULL,
    latency_us      integer[]   NOT NULL,
    PRIMARY KEY (org_id, chunk_id)
);
ALTER TABLE activity_chunks
    ALTER COLUMN request_time_us SET STORAGE EXTERNAL,
    ALTER COLUMN token_id SET STORAGE EXTERNAL,
    ALTER COLUMN request_id SET STORAGE EXTERNAL,
    ALTER COLUMN client SET STORAGE EXTERNAL,
    ALTER COLUMN user_agent SET STORAGE EXTERNAL,
    ALTER COLUMN method SET STORAGE EXTERNAL,
    ALTER COLUMN route SET STORAGE EXTERNAL,
    ALTER COLUMN resource_id SET STORAGE EXTERNAL,
    ALTER COLUMN filter SET STORAGE EXTERNAL,
    ALTER COLUMN status SET STORAGE EXTERNAL,
    ALTER COLUMN scim_type SET STORAGE EXTERNAL,
    ALTER COLUMN detail SET STORAGE EXTERNAL,
    ALTER COLUMN latency_us SET STORAGE EXTERNAL;
-- reads newest first, and the pruning by age
CREATE INDEX activity_chunks_time_idx ON activity_chunks (org_id, last_time, chunk_id);
-- `--errors`: the chunks holding a failed request
CREATE INDEX activity_chunks_errors_idx ON activity_chunks (org_id, last_time, chunk_id)
    WHERE errors > 0;

-- what the rows hold: a chunk for each organisation's minute, a thousand
-- rows at most
INSERT INTO activity_chunks (org_id, first_time, last_time, entries, errors, request_time_us,
                             token_id, request_id, client, user_agent, method, route,
                             resource_id, filter, status, scim_type, detail, latency_us)
SELECT org_id, min(request_time), max(request_time), count(*),
       count(*) FILTER (WHERE status >= 400),
       array_agg(((extract(epoch FROM request_time) * 1000000)::bigint) ORDER BY n),
       array_agg(token_id ORDER BY n), array_agg(request_id ORDER BY n),
       array_agg(client ORDER BY n), array_agg(user_agent ORDER BY n),
       array_agg(method ORDER BY n), array_agg(route ORDER BY n),
       array_agg(resource_id ORDER BY n), array_agg(filter ORDER BY n),
       array_agg(status ORDER BY n), array_agg(scim_type ORDER BY n),
       array_agg(detail ORDER BY n), array_agg(latency_us ORDER BY n)
FROM (SELECT a.*, floor(extract(epoch FROM request_time) / 60) AS minute,
             row_number() OVER (PARTITION BY org_id, floor(extract(epoch FROM request_time) / 60)
                                ORDER BY request_time, activity_id) AS n
      FROM activity a) a
GROUP BY org_id, minute, (n - 1) / 1000
ORDER BY min(request_time), org_id;

-- a watch resumed from a batch of before (its `after`) goes on from the
-- chunks stored from here on
DO $$
DECLARE next bigint;
BEGIN
    SELECT greatest((SELECT max(chunk_id) FROM activity_chunks),
                    (SELECT max(batch_id) FROM activity_batches), 0) + 1 INTO next;
    EXECUTE format('ALTER TABLE activity_chunks ALTER COLUMN chunk_id RESTART WITH %s', next);
END $$;

DROP TABLE activity_batches;
DROP TABLE activity;

-- one row for each request. An entry's id is its chunk's id times 1024 plus
-- its place in the chunk (core.activity.MAX_BATCH < 1024): ids grow with
-- the chunks, and each is one bigint for a page token.
CREATE VIEW activity AS
SELECT c.org_id,
       timestamptz 'epoch' + e.request_time_us * interval '1 microsecond' AS request_time,
       c.chunk_id * 1024 + e.n - 1 AS activity_id,
       e.token_id, e.request_id, e.client, e.user_agent, e.method, e.route, e.resource_id,
       e.filter, e.status, e.scim_type, e.detail, e.latency_us,
       -- which chunk, and what it says of all its entries: a condition on
       -- these is one on the chunk, which PostgreSQL checks (with the
       -- chunks' indexes) before it unnests any
       c.chunk_id, c.first_time AS chunk_first_time, c.last_time AS chunk_last_time,
       c.errors AS chunk_errors
FROM activity_chunks c
CROSS JOIN LATERAL unnest(c.request_time_us, c.token_id, c.request_id, c.client,
                          c.user_agent, c.method, c.route, c.resource_id, c.filter,
                          c.status, c.scim_type, c.detail, c.latency_us)
     WITH ORDINALITY AS e(request_time_us, token_id, request_id, client, user_agent, method,
                          route, resource_id, filter, status, scim_type, detail, latency_us,
                          n);
