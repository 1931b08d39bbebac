"""The leaderboard: candidates x devices of a sweep as a ranked pandas frame.

``frame`` builds the frame users see; ``sql`` holds the queries that rank 100k rows in
the database; ``where`` is the ``--where`` filter language; ``report`` renders the
offline HTML report.
May import: ``selection.store``, ``selection.ranking``, ``selection.records``, ``selection.errors``.
"""
