-- For every date d of the spine ($days) and player scheduled on d (rostered, by their latest
-- gamebook row in the $lookback days before d, on a team that plays on d): rolling form over
-- the games they played, and the team's rest. History is read once for the whole spine,
-- bounded to [$since, $until) so only those partitions are scanned.
WITH spine AS (
    SELECT CAST(d AS DATE) AS d FROM UNNEST($days) AS t(d)
),
schedule AS (
    SELECT x.* FROM {nbac_schedule} AS x JOIN spine AS s ON x.game_date = s.d
    WHERE x.game_date BETWEEN $first AND $last
),
gamebook AS (
    SELECT * FROM {nbac_gamebook_player_stats}
    WHERE game_date >= $since AND game_date < $until
),
boxscores AS (
    SELECT * FROM {bdl_player_boxscores}
    WHERE game_date >= $since AND game_date < $until
),
games_today AS (
    SELECT game_date AS d, game_id, home_team AS team_abbr, away_team AS opponent_abbr,
        TRUE AS is_home
    FROM schedule
    UNION ALL
    SELECT game_date AS d, game_id, away_team AS team_abbr, home_team AS opponent_abbr,
        FALSE AS is_home
    FROM schedule
),
roster AS (
    SELECT
        s.d,
        g.player_id,
        g.player_name,
        g.team_abbr,
        g.status AS last_status,
        ROW_NUMBER() OVER (PARTITION BY s.d, g.player_id ORDER BY g.game_date DESC, g.game_id) AS rn
    FROM spine AS s
    JOIN gamebook AS g ON DATE_DIFF('day', g.game_date, s.d) BETWEEN 1 AND $lookback
),
team_last_game AS (
    SELECT s.d, g.team_abbr, MAX(g.game_date) AS last_team_game
    FROM spine AS s
    JOIN gamebook AS g ON DATE_DIFF('day', g.game_date, s.d) BETWEEN 1 AND $lookback
    GROUP BY s.d, g.team_abbr
),
played AS (
    SELECT
        s.d,
        b.player_id,
        b.game_date,
        b.points,
        b.minutes,
        ROW_NUMBER() OVER (PARTITION BY s.d, b.player_id ORDER BY b.game_date DESC, b.game_id) AS rn
    FROM spine AS s
    JOIN boxscores AS b ON DATE_DIFF('day', b.game_date, s.d) BETWEEN 1 AND $lookback
),
form AS (
    SELECT
        d,
        player_id,
        COUNT(*) AS games_in_window,
        AVG(CASE WHEN rn <= 5 THEN 1.0 * points END) AS points_avg_last_5,
        AVG(CASE WHEN rn <= 10 THEN 1.0 * points END) AS points_avg_last_10,
        AVG(CASE WHEN rn <= 5 THEN minutes END) AS minutes_avg_last_5,
        AVG(CASE WHEN rn <= 10 THEN minutes END) AS minutes_avg_last_10,
        MAX(game_date) AS last_game_date
    FROM played
    GROUP BY d, player_id
)
SELECT
    r.d AS game_date,
    r.player_id,
    r.player_name,
    g.team_abbr,
    g.opponent_abbr,
    g.game_id,
    g.is_home,
    COALESCE(f.games_in_window, 0) AS games_in_window,
    f.points_avg_last_5,
    f.points_avg_last_10,
    f.minutes_avg_last_5,
    f.minutes_avg_last_10,
    f.last_game_date,
    DATE_DIFF('day', t.last_team_game, r.d) AS days_rest,
    COALESCE(DATE_DIFF('day', t.last_team_game, r.d) = 1, FALSE) AS is_back_to_back,
    r.last_status
FROM roster AS r
JOIN games_today AS g ON g.d = r.d AND g.team_abbr = r.team_abbr
LEFT JOIN form AS f ON f.d = r.d AND f.player_id = r.player_id
LEFT JOIN team_last_game AS t ON t.d = r.d AND t.team_abbr = g.team_abbr
WHERE r.rn = 1
