UPDATE counters SET last_value = last_value + 1 WHERE id = :counter RETURNING last_value;
