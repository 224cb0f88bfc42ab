-- Per player scheduled on $d (rostered, by their latest gamebook row in [$since, $d), on a
-- team that plays on $d): rolling form over the games they played, and the team's rest.
WITH games_today AS (
    SELECT game_id, home_team AS team_abbr, away_team AS opponent_abbr, TRUE AS is_home
    FROM {nbac_schedule}
    WHERE game_date = $d
    UNION ALL
    SELECT game_id, away_team AS team_abbr, home_team AS opponent_abbr, FALSE AS is_home
    FROM {nbac_schedule}
    WHERE game_date = $d
),
roster AS (
    SELECT
        g.player_id,
        g.player_name,
        g.team_abbr,
        g.status AS last_status,
        ROW_NUMBER() OVER (PARTITION BY g.player_id ORDER BY g.game_date DESC) AS rn
    FROM {nbac_gamebook_player_stats} AS g
    WHERE g.game_date >= $since AND g.game_date < $d
),
team_last_game AS (
    SELECT team_abbr, MAX(game_date) AS last_team_game
    FROM {nbac_gamebook_player_stats}
    WHERE game_date >= $since AND game_date < $d
    GROUP BY team_abbr
),
played AS (
    SELECT
        b.player_id,
        b.game_date,
        b.points,
        b.minutes,
        ROW_NUMBER() OVER (PARTITION BY b.player_id ORDER BY b.game_date DESC) AS rn
    FROM {bdl_player_boxscores} AS b
    WHERE b.game_date >= $since AND b.game_date < $d
),
form AS (
    SELECT
        player_id,
        COUNT(*) AS games_in_window,
        AVG(CASE WHEN rn <= 5 THEN 1.0 * points END) AS points_avg_last_5,
        AVG(CASE WHEN rn <= 10 THEN 1.0 * points END) AS points_avg_last_10,
        AVG(CASE WHEN rn <= 5 THEN minutes END) AS minutes_avg_last_5,
        AVG(CASE WHEN rn <= 10 THEN minutes END) AS minutes_avg_last_10,
        MAX(game_date) AS last_game_date
    FROM played
    GROUP BY player_id
)
SELECT
    $d AS game_date,
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
    DATE_DIFF('day', t.last_team_game, $d) AS days_rest,
    COALESCE(DATE_DIFF('day', t.last_team_game, $d) = 1, FALSE) AS is_back_to_back,
    r.last_status
FROM roster AS r
JOIN games_today AS g ON g.team_abbr = r.team_abbr
LEFT JOIN form AS f ON f.player_id = r.player_id
LEFT JOIN team_last_game AS t ON t.team_abbr = g.team_abbr
WHERE r.rn = 1
